"""Bulk writes on both stores: conflicts, returned rows, row order, values JSON must escape."""

import pytest
from sqlalchemy import select

from services.store import tables as t
from services.store.bulk import bulk_insert, bulk_insert_later, pipelined
from services.store.db import create_tables, make_engine


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request):
    if request.param == "sqlite":
        url = request.getfixturevalue("sqlite_url")
    else:
        url = request.getfixturevalue("postgres_database")
    engine = make_engine(url)
    create_tables(engine)
    yield engine
    engine.dispose()


def _promotion(n: int, **changes) -> dict:
    return {"promotion_id": f"PR{n}", "country": "IT", "product_id": f"SKU{n % 3}", "price": "9.90", "currency": "EUR",
            "valid_from": "2027-01-01", "valid_to": "2027-12-31", "audience": "all", "launched_by": "p-1",
            "event_time": "2027-01-01T00:00:00Z", "event_id": f"e{n}", **changes}


def test_wide_rows_are_inserted_updated_on_conflict_and_returned(engine):
    quoted = 'a "quoted" \\ name, with {braces} and ünïcödé'
    with engine.begin() as conn:
        returned = bulk_insert(conn, t.promotions, [_promotion(n) for n in range(5)], conflict=("promotion_id",),
                               update=True, returning=("promotion_id",))
        assert sorted(returned) == [(f"PR{n}",) for n in range(5)]
        bulk_insert(conn, t.promotions, [_promotion(1, price="7.50", audience=quoted, valid_to="2027-02-01")],
                    conflict=("promotion_id",), update=True)
    with engine.connect() as conn:
        rows = {r.promotion_id: r for r in conn.execute(select(t.promotions))}
    assert len(rows) == 5
    assert (rows["PR1"].price, rows["PR1"].audience, rows["PR1"].valid_to) == ("7.50", quoted, "2027-02-01")
    assert (rows["PR2"].price, rows["PR2"].valid_to) == ("9.90", "2027-12-31")


def test_narrow_rows_keep_their_order_and_skip_conflicts(engine):
    rows = [{"topic": "kam.alerts", "key": f"k{n}", "value": f'{{"n": {n}, "text": "a \\"quote\\""}}',
             "created_at": "2027-01-01T00:00:00Z"} for n in range(50)]
    with engine.begin() as conn:
        with pipelined(conn):
            later = bulk_insert_later(conn, t.outbox, rows, returning=("id",))
        ids = sorted(i for (i,) in later.rows())
        claimed = bulk_insert(conn, t.processed_events, [{"source": "s", "event_id": "1"}, {"source": "s", "event_id": "2"}],
                              conflict=("source", "event_id"), returning=("source", "event_id"))
        again = bulk_insert(conn, t.processed_events, [{"source": "s", "event_id": "2"}, {"source": "s", "event_id": "3"}],
                            conflict=("source", "event_id"), returning=("source", "event_id"))
    assert sorted(claimed) == [("s", "1"), ("s", "2")] and again == [("s", "3")]
    with engine.connect() as conn:
        stored = conn.execute(select(t.outbox.c.id, t.outbox.c.value).order_by(t.outbox.c.id)).all()
    assert [i for i, _ in stored] == ids
    assert [v for _, v in stored] == [r["value"] for r in rows]  # ids follow the order of the rows


def test_a_dead_letter_with_a_nul_in_its_key_and_a_flood_of_control_characters_is_stored_and_publishable(engine):
    import json

    from services.config import Settings
    from services.inputs import InputRecord
    from services.processor import Processor

    processor = Processor(engine, Settings(database_url=str(engine.url)))
    flood = b"\x01" * (400 * 1024)  # invalid JSON; each byte becomes six in the letter's JSON
    result = processor.process([InputRecord("erp.stock", 0, 0, b"item\x00key", flood)])
    assert result.dead_letters == 1
    with engine.connect() as conn:
        (key, value), = conn.execute(select(t.outbox.c.key, t.outbox.c.value)).all()
    letter = json.loads(value)
    assert key == "item\ufffdkey" and letter["key"] == "item\x00key"
    assert len(value) < 600 * 1024  # well under Kafka's default 1 MB message limit
    assert letter["raw_truncated"] is True and letter["raw_bytes"] == len(flood)
    assert letter["raw"] == "\x01" * len(letter["raw"]) and letter["error"]["code"] == "invalid_json"

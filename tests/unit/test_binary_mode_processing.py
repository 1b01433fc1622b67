"""Binary content mode through the real processor on SQLite: one event whichever mode it came in,
dead letters whose `raw` is the value, wrong_topic changes nothing (CONTRACT §2, §3, §6)."""

from __future__ import annotations

from sqlalchemy import select

from services.inputs import InputRecord
from services.store import tables as t

from .processing import outbox_messages, processor_on
from .schema_samples import binary, binary_with, encode, envelope


def _accounts(engine):
    with engine.connect() as conn:
        return {r.account_id: r.name for r in conn.execute(select(t.accounts))}


def _account_event(event_id: str, name: str, time: str = "2027-01-01T00:00:00Z") -> dict:
    return envelope("account.upserted", id=event_id, source="crm/binary-test", time=time,
                    data={"account_id": "ACME", "name": name, "parent_id": None, "country": "DE", "tier": "key"})


def test_an_event_sent_in_both_modes_is_applied_once(sqlite_url):
    engine, processor = processor_on(sqlite_url)
    event = _account_event("e1", "ACME Group")
    headers, value = binary(event)
    first = processor.process([InputRecord("crm.accounts", 0, 0, b"ACME", value, tuple(headers))])
    again = processor.process([InputRecord("crm.accounts", 1, 0, b"ACME", encode(event)),
                               InputRecord("crm.accounts", 2, 0, b"ACME", value, tuple(headers))])
    assert (first.processed, first.duplicates) == (1, 0)
    assert (again.processed, again.duplicates) == (0, 2)
    assert _accounts(engine) == {"ACME": "ACME Group"}
    assert outbox_messages(engine, "kam.dlq") == []


def test_the_same_id_with_other_content_in_the_other_mode_is_a_duplicate_conflict(sqlite_url):
    engine, processor = processor_on(sqlite_url)
    processor.process([InputRecord("crm.accounts", 0, 0, b"ACME", encode(_account_event("e1", "ACME Group")))])
    headers, value = binary(_account_event("e1", "ACME Renamed"))
    processor.process([InputRecord("crm.accounts", 0, 1, b"ACME", value, tuple(headers))])
    letters = outbox_messages(engine, "kam.dlq")
    assert [d["error"]["code"] for d in letters] == ["duplicate_conflict"]
    assert _accounts(engine) == {"ACME": "ACME Group"}  # the first one stands


def test_a_binary_dead_letter_holds_the_value_as_raw(sqlite_url):
    engine, processor = processor_on(sqlite_url)
    headers, value = binary_with("decision.made", drop=("ce_id",))
    processor.process([InputRecord("kam.decisions", 3, 9, b"al-1", value, tuple(headers))])
    (letter,) = outbox_messages(engine, "kam.dlq")
    assert letter["error"]["code"] == "invalid_envelope"
    assert letter["error"]["message"].startswith("header ce_id: missing")
    assert letter["raw"] == value.decode()
    assert (letter["topic"], letter["partition"], letter["offset"], letter["key"]) == ("kam.decisions", 3, 9, "al-1")


def test_an_event_on_another_input_topic_is_a_wrong_topic_dead_letter_and_changes_nothing(sqlite_url):
    engine, processor = processor_on(sqlite_url)
    event = _account_event("e1", "ACME Group")
    headers, value = binary(event)
    processor.process([InputRecord("erp.agreements", 0, 0, b"ACME", encode(event)),
                       InputRecord("kam.decisions", 0, 0, b"ACME", value, tuple(headers))])
    letters = outbox_messages(engine, "kam.dlq")
    assert [(d["topic"], d["error"]["code"]) for d in letters] == [("erp.agreements", "wrong_topic"),
                                                                   ("kam.decisions", "wrong_topic")]
    assert _accounts(engine) == {}
    # the same event on its own topic afterwards is applied: a wrong_topic dead letter claims nothing
    processor.process([InputRecord("crm.accounts", 0, 0, b"ACME", encode(event))])
    assert _accounts(engine) == {"ACME": "ACME Group"}

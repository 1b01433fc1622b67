"""`onevoice alerts` and `onevoice status` against real stores (and the real broker for the lag)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import pytest
from aiokafka import AIOKafkaConsumer

from schemas.registry import INPUT_TOPICS
from services.observability.lag import input_partitions
from services.observability.store_probe import record_instance
from services.store import tables as t
from services.store.db import create_tables, make_engine
from tests.ops.report_data import alert_row, history_row, write
from tests.ops.test_setup_mistakes import onevoice

NOW = datetime.now(timezone.utc)


@pytest.fixture
def store(sqlite_url):
    engine = make_engine(sqlite_url)
    create_tables(engine)
    alerts = [alert_row("a1", "key_account_dunning", "high", "KA-1", "kam-a", NOW, "open"),
              alert_row("a2", "local_price_below_global", "medium", "KA-2", "kam-a", NOW, "resolved"),
              alert_row("a3", "scarce_stock_allocation", "high", "KA-1", "senior-s", NOW, "escalated"),
              alert_row("a4", "unauthorized_commitment", "medium", "KA-2", "kam-b", NOW, "acknowledged")]
    write(engine, alerts, [history_row(a["alert_id"], "open", a["assignee"], NOW) for a in alerts])
    with engine.begin() as conn:
        conn.execute(t.outbox.insert(), [{"topic": "kam.alerts", "key": "kam-a", "value": "{}",
                                          "created_at": "2020-01-01T00:00:00.000Z"}])
    yield engine
    engine.dispose()


def test_alerts_filters(store, sqlite_url):
    rc, out = onevoice("alerts", "--open", "--json", database_url=sqlite_url)
    assert rc == 0, out
    assert sorted(json.loads(line)["alert_id"] for line in out.splitlines()) == ["a1", "a3", "a4"]
    rc, out = onevoice("alerts", "--assignee", "kam-a", "--key-account", "KA-1", "--json", database_url=sqlite_url)
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["alert_id"] for r in rows] == ["a1"] and rows[0]["evidence"] == ["a1"]
    rc, out = onevoice("alerts", database_url=sqlite_url)
    assert rc == 0 and "4 alerts" in out and "KA-1" in out and "kam-b" in out


async def expected_lag(bootstrap: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = await input_partitions(consumer, INPUT_TOPICS)
        ends, starts = await consumer.end_offsets(partitions), await consumer.beginning_offsets(partitions)
        return sum(ends[tp] - starts[tp] for tp in partitions)
    finally:
        await consumer.stop()


@pytest.mark.kafka
def test_status(store, sqlite_url, kafka_bootstrap, topic_prefix):
    from consumers.topics import ensure_topics

    asyncio.run(ensure_topics(kafka_bootstrap, 6))
    record_instance(store, "host-1-abc", {"last_batch": {"at": "2027-01-01T00:00:00.000Z", "events": 12,
                                                         "duration_ms": 3.5}, "assigned_partitions": 36}, NOW)
    rc, out = onevoice("status", "--json", database_url=sqlite_url, kafka_bootstrap=kafka_bootstrap,
                       group_id=topic_prefix)
    assert rc == 0, out
    status = json.loads(out)
    assert status["alerts"] == {"open": 3, "escalated": 1, "escalations_due": 0}
    assert status["outbox"]["pending"] == 1 and status["outbox"]["oldest_age_s"] > 86400
    # a group that never committed has everything ahead of it, from the log start
    assert status["consumer_lag"]["total"] == asyncio.run(expected_lag(kafka_bootstrap))
    assert len(status["consumer_lag"]["partitions"]) == 6 * len(INPUT_TOPICS)
    assert status["instances"][0]["instance"] == "host-1-abc"
    rc, out = onevoice("status", database_url=sqlite_url, kafka_bootstrap=kafka_bootstrap, group_id=topic_prefix)
    assert rc == 0 and "3 open, 1 escalated" in out and "host-1-abc" in out and "12 events" in out

"""The demo writes only into a broker and stores of its own: it refuses anything holding other data."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import text

from consumers.demo import DemoPlaces, ForeignData, check_stores
from services.store.db import create_tables, make_engine
from tests.ops.support import free_port
from tests.ops.test_setup_mistakes import assert_short_message, onevoice


async def topics_of(bootstrap: str, create: str | None = None) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if create:
            await admin.create_topics([NewTopic(create, num_partitions=1, replication_factor=1)])
        return set(await admin.list_topics())
    finally:
        await admin.close()


@pytest.mark.kafka
def test_demo_refuses_a_broker_with_foreign_data(kafka_broker, topic_prefix, tmp_path):
    before = asyncio.run(topics_of(kafka_broker.bootstrap, create=f"{topic_prefix}.orders"))
    rc, out = onevoice("demo", "--port", str(kafka_broker.port), "--data-dir", str(tmp_path / "demo"))
    message = assert_short_message(rc, out, f"127.0.0.1:{kafka_broker.port}", "not demo data", "--port")
    # the message names the foreign topics (the first few: the session's broker holds every test's)
    assert "holds topics that are not demo data" in message
    assert asyncio.run(topics_of(kafka_broker.bootstrap)) == before  # nothing created, nothing written
    assert not (tmp_path / "demo" / "stores").exists()


def test_demo_refuses_a_store_that_is_not_a_demo_store(tmp_path):
    stores = tmp_path / "demo" / "stores"
    stores.mkdir(parents=True)
    engine = make_engine(f"sqlite:///{stores / 'escalation.db'}")
    create_tables(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO counters (instance, name, value) VALUES ('prod-1', 'processed', 42)"))
    engine.dispose()
    places = DemoPlaces(f"127.0.0.1:{free_port()}", 0, tmp_path / "demo")
    with pytest.raises(ForeignData, match="escalation.db is not a demo store"):
        check_stores(places, ["bad-input", "escalation"])
    # through the command line: refused before any broker is started or any file written
    rc, out = onevoice("demo", "--port", str(free_port()), "--data-dir", str(tmp_path / "demo"))
    assert_short_message(rc, out, "not a demo store", "--data-dir")
    assert sorted(p.name for p in stores.iterdir() if p.suffix == ".db") == ["escalation.db"]
    assert not (tmp_path / "demo" / f"kafka-{places.port}").exists()

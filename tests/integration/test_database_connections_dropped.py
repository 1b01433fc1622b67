"""PostgreSQL drops every connection of a running `onevoice run`: the service carries on, nothing lost or doubled.

The engine does not ping connections before use (a round trip per transaction), so a dropped
connection fails the first statement sent on it. The batch loop, the relay, the timers and the
ops reporter must each retry rather than stop.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter

import pytest
from sqlalchemy import func, select, text

from services.devkit.workload import generate
from consumers.topics import ensure_topics
from schemas.registry import INPUT_TOPICS
from services.scenario_runner import OUTPUT_TOPICS, end_offsets, read_outputs, start_group_at, wait_until_caught_up
from services.store import tables as t
from services.store.db import make_engine
from tests.integration.test_two_processes import publish, unsent
from tests.support.service_process import ServiceProcess

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def drop_connections(engine) -> int:
    """Terminate every other session on the service's database (what a PostgreSQL restart does to them)."""
    with engine.connect() as conn:
        return len(conn.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()")).all())


async def test_the_service_carries_on_after_the_database_drops_its_connections(
        kafka_bootstrap, postgres_database, tmp_path):
    prefix = f"drop{uuid.uuid4().hex[:5]}"
    messages = generate(4000, seed=5, prefix=prefix)
    master = [m for m in messages if m[0] == "crm.accounts"]
    rest = [m for m in messages if m[0] != "crm.accounts"]
    await ensure_topics(kafka_bootstrap, 6)
    group = f"drop-{prefix}"
    await start_group_at(kafka_bootstrap, group, await end_offsets(kafka_bootstrap, INPUT_TOPICS))
    output_start = await end_offsets(kafka_bootstrap, OUTPUT_TOPICS)
    env = {**os.environ, "ONEVOICE_KAFKA_BOOTSTRAP": kafka_bootstrap, "ONEVOICE_DATABASE_URL": postgres_database,
           "ONEVOICE_GROUP_ID": group, "ONEVOICE_OPS_INTERVAL_S": "1"}
    service = ServiceProcess(env, tmp_path / "service.log")
    engine = make_engine(postgres_database)
    try:
        service.start()
        await publish(kafka_bootstrap, master + rest[:800])
        await wait_until_caught_up(kafka_bootstrap, group, 120, lambda: unsent(engine) == 0)
        dropped = drop_connections(engine)
        engine.dispose()  # ours were dropped too
        await publish(kafka_bootstrap, rest[800:])
        await wait_until_caught_up(kafka_bootstrap, group, 120, lambda: unsent(engine) == 0)
        assert service.alive(), service.tail()
        assert service.terminate() == 0, service.tail()
        with engine.connect() as conn:
            applied = conn.execute(select(func.count()).select_from(t.processed_events)).scalar()
            processed = conn.execute(select(func.sum(t.counters.c.value))
                                     .where(t.counters.c.name == "processed")).scalar()
    finally:
        if service.alive():
            service.kill()
        engine.dispose()
    assert dropped >= 2, "the service's connections (batch loop, relay) should have been open"
    distinct = {(event["source"], event["id"]) for event in (json.loads(m[2]) for m in messages)}
    assert applied == processed == len(distinct)
    outputs = await read_outputs(kafka_bootstrap, output_start)
    alert_keys = Counter((a["alert_id"], a["status"]) for a in outputs["kam.alerts"])
    instruction_keys = Counter(i["instruction_id"] for i in outputs["kam.instructions"])
    assert outputs["kam.instructions"], "the workload's dunnings and shortages should have been answered"
    assert [d for d in outputs["kam.dlq"] if d["error"]["code"] not in ("unknown_alert", "unauthorized_decision",
                                                              "invalid_decision")] == [], "a valid event was dead-lettered"
    assert max(alert_keys.values()) == 1 and max(instruction_keys.values()) == 1

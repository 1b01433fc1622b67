"""PostgreSQL drops the connections of a running `onevoice run` in the middle of its transactions: the
service carries on, and nothing is lost or doubled.

The engine does not ping connections before use (a round trip per transaction), so a dropped
connection fails the statement running on it, or the next one sent. The batch loop, the relay, the
timers and the ops reporter must each retry rather than stop, and a batch whose transaction was cut
off must be applied again as a whole, not taken for a bad event (dead letter).

While the service works through a backlog (batches of at most 200 events, so there are many
transactions to land in; published in four parts), three times: publish a part, wait until a batch
was committed since the last drop, then until one of its connections is inside a transaction
(`pg_stat_activity.xact_start`), and terminate every connection
of the service at once (what a PostgreSQL restart does to them; the server answers the cut-off
statement with SQLSTATE 57P01). The outcome is compared with a single processor fed the same
events without drops: open conflicts, instructions, notices and dead letters (by content), applied
inputs and counters.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections import Counter

import pytest
from sqlalchemy import func, select, text

from consumers.topics import ensure_topics
from schemas.registry import INPUT_TOPICS
from services.devkit.workload import generate
from services.devkit.scenario_runner import OUTPUT_TOPICS, end_offsets, read_outputs, start_group_at, wait_until_caught_up
from services.store import tables as t
from services.store.db import make_engine
from tests.integration.test_two_processes import (applied, dead_letters, instructions, notices, open_conflicts,
                                                  publish, single_processor, unsent)
from tests.support.service_process import ServiceProcess

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]
DROPS = 3

IN_TRANSACTION = text(
    "SELECT pid, state, left(query, 80) FROM pg_stat_activity WHERE datname = current_database() "
    "AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND xact_start IS NOT NULL "
    "AND state IN ('active', 'idle in transaction')")
TERMINATE_ALL = text(
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'")


def drop_in_a_transaction(engine, deadline: float) -> tuple[list[tuple], int]:
    """Once some connection of the service is inside a transaction, terminate all of them; returns what the
    ones in a transaction were doing, and how many connections were dropped."""
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            busy = conn.execute(IN_TRANSACTION).all()
            if busy:
                dropped = conn.execute(TERMINATE_ALL).scalar()
                conn.commit()
                return [tuple(row) for row in busy], dropped
            conn.commit()
            time.sleep(0.005)
    raise AssertionError("no connection of the service was ever inside a transaction")


async def test_the_service_carries_on_when_the_database_drops_its_connections_mid_transaction(
        kafka_bootstrap, postgres_url, postgres_database, tmp_path):
    prefix = f"drop{uuid.uuid4().hex[:5]}"
    messages = generate(4000, seed=5, prefix=prefix)
    master = [m for m in messages if m[0] == "crm.accounts"]
    rest = [m for m in messages if m[0] != "crm.accounts"]
    reference = single_processor(postgres_url, master + rest)  # what the service does when nothing is dropped
    await ensure_topics(kafka_bootstrap, 6)
    group = f"drop-{prefix}"
    await start_group_at(kafka_bootstrap, group, await end_offsets(kafka_bootstrap, INPUT_TOPICS))
    output_start = await end_offsets(kafka_bootstrap, OUTPUT_TOPICS)
    env = {**os.environ, "ONEVOICE_KAFKA_BOOTSTRAP": kafka_bootstrap, "ONEVOICE_DATABASE_URL": postgres_database,
           "ONEVOICE_GROUP_ID": group, "ONEVOICE_OPS_INTERVAL_S": "1", "ONEVOICE_MAX_BATCH": "200"}
    service = ServiceProcess(env, tmp_path / "service.log")
    engine = make_engine(postgres_database)
    drops = []
    try:
        service.start()
        await publish(kafka_bootstrap, master)
        await wait_until_caught_up(kafka_bootstrap, group, 120, lambda: unsent(engine) == 0)
        base = await asyncio.to_thread(applied, engine)
        # The rest goes out in DROPS + 1 parts, one before each drop and the last after it: a service that
        # works faster than this test polls cannot finish the backlog before the drops land.
        parts = [rest[i * len(rest) // (DROPS + 1):(i + 1) * len(rest) // (DROPS + 1)] for i in range(DROPS + 1)]
        applied_so_far = base
        for part in parts[:DROPS]:
            await publish(kafka_bootstrap, part)
            # a batch committed since the last drop: the batch loop and the relay are connected again
            deadline = time.monotonic() + 120
            while await asyncio.to_thread(applied, engine) <= applied_so_far:
                assert time.monotonic() < deadline and service.alive(), service.tail()
                await asyncio.sleep(0.005)
            busy, dropped = await asyncio.to_thread(drop_in_a_transaction, engine, time.monotonic() + 60)
            engine.dispose()  # ours were dropped too
            applied_so_far = await asyncio.to_thread(applied, engine)
            drops.append((busy, dropped, applied_so_far))
        await publish(kafka_bootstrap, parts[DROPS])
        await wait_until_caught_up(kafka_bootstrap, group, 180, lambda: unsent(engine) == 0)
        assert service.alive(), service.tail()
        assert service.terminate() == 0, service.tail()
        with engine.connect() as conn:
            applied_in_the_end = applied(engine)
            processed = conn.execute(select(func.sum(t.counters.c.value))
                                     .where(t.counters.c.name == "processed")).scalar()
        conflicts = open_conflicts(engine)
    finally:
        if service.alive():
            service.kill()
        engine.dispose()
    for busy, dropped, applied_after in drops:
        print(f"  dropped {dropped} connections at {applied_after:,}/{applied_in_the_end:,} applied; "
              f"in a transaction: {busy}")
        assert busy and dropped >= 2, "the batch loop's and the relay's connections should have been open"
        assert applied_after < applied_in_the_end, "the drop should land while inputs remained to be applied"
    distinct = {(event["source"], event["id"]) for event in (json.loads(m[2]) for m in messages)}
    assert processed == len(distinct)
    assert applied_in_the_end >= len(distinct)
    outputs = await read_outputs(kafka_bootstrap, output_start)
    alert_keys = Counter((a["alert_id"], a["status"]) for a in outputs["kam.alerts"])
    instruction_keys = Counter(i["instruction_id"] for i in outputs["kam.instructions"])
    notice_keys = Counter(n["notice_id"] for n in outputs["kam.notices"])
    letter_keys = Counter((d["topic"], d["partition"], d["offset"]) for d in outputs["kam.dlq"])
    assert outputs["kam.instructions"], "the workload's dunnings and shortages should have been answered"
    assert outputs["kam.notices"], "the workload's commitments should have been told"
    decision_codes = ("unknown_alert", "unauthorized_decision", "invalid_decision")
    assert [d for d in outputs["kam.dlq"] if d["error"]["code"] not in decision_codes] == [], \
        "a valid event was dead-lettered"
    for keys in (alert_keys, instruction_keys, notice_keys, letter_keys):
        assert max(keys.values()) == 1, [k for k, n in keys.items() if n > 1][:5]
    # and the same outcome as without drops
    assert conflicts == reference["open conflicts"]
    assert instructions(outputs["kam.instructions"]) == reference["instructions"]
    assert notices(outputs["kam.notices"]) == reference["notices"]
    assert dead_letters(outputs["kam.dlq"]) == reference["dead letters"]
    assert applied_in_the_end == reference["applied"] and processed == reference["processed"]

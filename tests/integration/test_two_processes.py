"""Two `onevoice run` processes in one consumer group share the work and together behave like one.

The generated workload is published to the real broker (master data first, then the rest) and
consumed by two processes on one PostgreSQL database. Compared with the same events applied
in publish order by a single processor: the same final open conflicts (the workload is built so
that they do not depend on arrival order), every input applied once, both processes did work,
and no output was published twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections import Counter

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import func, select

from services.devkit.workload import generate
from consumers.topics import ensure_topics
from schemas.registry import INPUT_TOPICS
from services.config import Settings
from services.domain import CLOSED_STATUSES
from services.inputs import InputRecord
from services.processor import Processor
from services.rules.agreements import CONFLICT_RULES
from services.scenario_runner import OUTPUT_TOPICS, end_offsets, read_outputs, start_group_at, wait_until_caught_up
from services.store import tables as t
from services.store.db import create_tables, make_engine
from tests.support.databases import fresh_postgres_database
from tests.support.service_process import ServiceProcess

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]
EVENTS = 4000


def open_conflicts(engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(t.alerts.c.fingerprint).where(
            t.alerts.c.rule.in_(CONFLICT_RULES), t.alerts.c.status.not_in(list(CLOSED_STATUSES)))).scalars())


def unsent(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(t.outbox).where(t.outbox.c.sent_at.is_(None))).scalar()


async def publish(bootstrap: str, messages) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for topic, key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def wait_for_members(bootstrap: str, group: str, count: int, timeout: float = 60) -> None:
    """Until the group is stable with `count` members, so that both processes own partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for response in await admin.describe_consumer_groups([group]):
                for _error, _group, state, _type, _protocol, members, *_ in response.groups:
                    if state == "Stable" and len(members) == count:
                        return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"group {group} never had {count} stable members")
    finally:
        await admin.close()


async def test_two_processes_share_the_work_and_behave_like_one(kafka_bootstrap, postgres_url, tmp_path):
    prefix = f"two{uuid.uuid4().hex[:5]}"
    messages = generate(EVENTS, seed=11, prefix=prefix)
    master = [m for m in messages if m[0] == "crm.accounts"]
    rest = [m for m in messages if m[0] != "crm.accounts"]

    with fresh_postgres_database(postgres_url, "ref") as reference_url:
        engine = make_engine(reference_url)
        create_tables(engine)
        processor = Processor(engine, Settings(database_url=reference_url))
        ordered = [InputRecord(topic, 0, i, key, value) for i, (topic, key, value) in enumerate(master + rest)]
        for start in range(0, len(ordered), 500):
            processor.process(ordered[start:start + 500])
        expected = open_conflicts(engine)
        engine.dispose()
    assert expected, "the workload should leave some conflicts open"

    await ensure_topics(kafka_bootstrap, 6)
    group = f"two-{prefix}"
    await start_group_at(kafka_bootstrap, group, await end_offsets(kafka_bootstrap, INPUT_TOPICS))
    output_start = await end_offsets(kafka_bootstrap, OUTPUT_TOPICS)
    with fresh_postgres_database(postgres_url, "two") as url:
        env = {"ONEVOICE_KAFKA_BOOTSTRAP": kafka_bootstrap, "ONEVOICE_DATABASE_URL": url,
               "ONEVOICE_GROUP_ID": group, "ONEVOICE_DECISION_WINDOW_S": "31536000"}
        env = {**os.environ, **env}
        services = [ServiceProcess(env, tmp_path / f"service-{n}.log") for n in range(2)]
        engine = make_engine(url)
        try:
            for service in services:
                service.start()
            await wait_for_members(kafka_bootstrap, group, 2)
            await publish(kafka_bootstrap, master)
            await wait_until_caught_up(kafka_bootstrap, group, 180, lambda: unsent(engine) == 0)
            await publish(kafka_bootstrap, rest)
            await wait_until_caught_up(kafka_bootstrap, group, 180, lambda: unsent(engine) == 0)
            for service in services:
                assert service.terminate() == 0, service.tail()
            assert open_conflicts(engine) == expected
            with engine.connect() as conn:
                per_instance = conn.execute(select(t.counters.c.instance, t.counters.c.value)
                                            .where(t.counters.c.name == "processed")).all()
                applied = conn.execute(select(func.count()).select_from(t.processed_events)).scalar()
        finally:
            for service in services:
                if service.alive():
                    service.kill()
            engine.dispose()
    assert len(per_instance) == 2 and all(value > 0 for _, value in per_instance), per_instance
    distinct = {(event["source"], event["id"]) for event in (json.loads(m[2]) for m in messages)}
    assert applied == len(distinct)
    assert sum(value for _, value in per_instance) == len(distinct)
    outputs = await read_outputs(kafka_bootstrap, output_start)
    alert_keys = Counter((a["alert_id"], a["status"]) for a in outputs["kam.alerts"])
    instruction_keys = Counter(i["instruction_id"] for i in outputs["kam.instructions"])
    assert max(alert_keys.values()) == 1 and max(instruction_keys.values()) == 1

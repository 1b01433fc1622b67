"""Two `onevoice run` processes in one consumer group share the work and together behave like one, even
when one of them is SIGKILLed while it works.

The generated workload (plus a dozen unusable messages) is published to the real broker (master data
first, then the rest) and consumed by two processes on one PostgreSQL database; once the rest is under
way the process holding the outbox relay's lease is SIGKILLed and started again. Compared with the
same inputs applied in publish order by a single processor (what the reference stands for is "one
process", not the rules, which are checked against hand-written expectations and the shared
scenarios elsewhere):

* the final open conflicts (the workload is built so that they do not depend on arrival order; which
  conflicts held for a moment does, PLATFORM-NOTES "Ordering");
* every instruction, notice and dead letter, by id and content (these depend only on the master data,
  published and applied first, and on per-partition order);
* every input applied once, both processes did work, and the kill landed while work was in flight;
* nothing published twice: alerts by (alert_id, status), instructions, notices, dead letters.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections import Counter

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import func, select

from consumers.topics import ensure_topics
from schemas.registry import INPUT_TOPICS
from services.config import Settings
from services.devkit.workload import generate
from services.domain import CLOSED_STATUSES
from services.inputs import InputRecord
from services.processor import Processor
from services.rules.agreements import CONFLICT_RULES
from services.devkit.scenario_runner import OUTPUT_TOPICS, end_offsets, read_outputs, start_group_at, wait_until_caught_up
from services.store import tables as t
from services.store.db import create_tables, make_engine
from tests.chaos.harness import junk
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


def applied(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(t.processed_events)).scalar()


def outbox_messages(engine) -> dict[str, list[dict]]:
    """The outputs a store wrote (its outbox), by topic: what a single processor would have published."""
    with engine.connect() as conn:
        rows = conn.execute(select(t.outbox.c.topic, t.outbox.c.value).order_by(t.outbox.c.id)).all()
    out: dict[str, list[dict]] = {topic: [] for topic in OUTPUT_TOPICS}
    for topic, value in rows:
        out.setdefault(topic, []).append(json.loads(value))
    return out


def instructions(messages: list[dict]) -> Counter:
    return Counter((i["instruction_id"], i["ref_id"], i["action"], json.dumps(i["allocation"]), i["account_id"],
                    i["key_account_id"]) for i in messages)


def notices(messages: list[dict]) -> Counter:
    return Counter((n["notice_id"], n["kind"], n["about"], tuple(n["recipients"]), n["caused_by"]) for n in messages)


def dead_letters(messages: list[dict]) -> Counter:
    """By input topic, key, content and code: the coordinates differ (the reference has none of Kafka's)."""
    return Counter((d["topic"], d["key"], d["raw"], d["error"]["code"]) for d in messages)


def single_processor(postgres_url: str, messages) -> dict:
    """What one processor makes of `messages` applied in publish order, in batches of 500, on a fresh database."""
    with fresh_postgres_database(postgres_url, "ref") as reference_url:
        engine = make_engine(reference_url)
        try:
            create_tables(engine)
            processor = Processor(engine, Settings(database_url=reference_url))
            ordered = [InputRecord(topic, 0, i, key, value) for i, (topic, key, value) in enumerate(messages)]
            for start in range(0, len(ordered), 500):
                processor.process(ordered[start:start + 500])
            outputs = outbox_messages(engine)
            with engine.connect() as conn:
                processed = conn.execute(select(func.sum(t.counters.c.value))
                                         .where(t.counters.c.name == "processed")).scalar()
            return {"open conflicts": open_conflicts(engine), "applied": applied(engine), "processed": processed,
                    "instructions": instructions(outputs["kam.instructions"]),
                    "notices": notices(outputs["kam.notices"]), "dead letters": dead_letters(outputs["kam.dlq"])}
        finally:
            engine.dispose()


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


def relay_holder(engine, services: list[ServiceProcess]) -> ServiceProcess:
    """The process holding the outbox relay's lease (its owner is `<host>-<pid>-<random>`), else the first."""
    with engine.connect() as conn:
        owners = conn.execute(select(t.leases.c.owner)).scalars().all()
    for service in services:
        if any(f"-{service.proc.pid}-" in owner for owner in owners):
            return service
    return services[0]


async def kill_while_working(services: list[ServiceProcess], engine, mark: int,
                             timeout: float = 120) -> tuple[ServiceProcess, int]:
    """Once the store has applied `mark` inputs, SIGKILL the process that relays the outputs (the one whose
    crash can leave outputs published but not marked sent); returns it and how many inputs were applied."""
    deadline = time.monotonic() + timeout
    while await asyncio.to_thread(applied, engine) < mark:
        assert time.monotonic() < deadline, f"no progress to {mark} inputs:\n{services[0].tail()}"
        await asyncio.sleep(0.05)
    victim = await asyncio.to_thread(relay_holder, engine, services)
    victim.kill()
    return victim, await asyncio.to_thread(applied, engine)


async def test_two_processes_share_the_work_and_behave_like_one(kafka_bootstrap, postgres_url, tmp_path):
    prefix = f"two{uuid.uuid4().hex[:5]}"
    messages = generate(EVENTS, seed=11, prefix=prefix)
    master = [m for m in messages if m[0] == "crm.accounts"]
    rest = [m for m in messages if m[0] != "crm.accounts"] + junk(prefix)

    reference = single_processor(postgres_url, master + rest)
    expected, expected_applied, expected_processed = (reference["open conflicts"], reference["applied"],
                                                      reference["processed"])
    assert expected, "the workload should leave some conflicts open"
    expected_instructions, expected_notices, expected_letters = (reference["instructions"], reference["notices"],
                                                                 reference["dead letters"])
    assert len(expected_instructions) > 50 and len(expected_notices) > 10 and len(expected_letters) >= 12

    await ensure_topics(kafka_bootstrap, 6)
    group = f"two-{prefix}"
    input_start = await end_offsets(kafka_bootstrap, INPUT_TOPICS)
    await start_group_at(kafka_bootstrap, group, input_start)
    output_start = await end_offsets(kafka_bootstrap, OUTPUT_TOPICS)
    with fresh_postgres_database(postgres_url, "two") as url:
        env = {"ONEVOICE_KAFKA_BOOTSTRAP": kafka_bootstrap, "ONEVOICE_DATABASE_URL": url,
               "ONEVOICE_GROUP_ID": group, "ONEVOICE_DECISION_WINDOW_S": "31536000",
               # the killed member leaves the group and the relay lease in seconds
               "ONEVOICE_SESSION_TIMEOUT_MS": "6000", "ONEVOICE_RELAY_LEASE_S": "3"}
        env = {**os.environ, **env}
        services = [ServiceProcess(env, tmp_path / f"service-{n}.log") for n in range(2)]
        engine = make_engine(url)
        try:
            for service in services:
                service.start()
            await wait_for_members(kafka_bootstrap, group, 2)
            await publish(kafka_bootstrap, master)
            await wait_until_caught_up(kafka_bootstrap, group, 180, lambda: unsent(engine) == 0)
            before_rest = await asyncio.to_thread(applied, engine)
            await publish(kafka_bootstrap, rest)
            victim, applied_at_kill = await kill_while_working(services, engine, before_rest + len(rest) // 3)
            victim.start()
            await wait_until_caught_up(kafka_bootstrap, group, 240, lambda: unsent(engine) == 0)
            for service in services:
                assert service.terminate() == 0, service.tail()
            assert open_conflicts(engine) == expected
            with engine.connect() as conn:
                per_instance = conn.execute(select(t.counters.c.instance, t.counters.c.value)
                                            .where(t.counters.c.name == "processed")).all()
            applied_in_the_end = applied(engine)
        finally:
            for service in services:
                if service.alive():
                    service.kill()
            engine.dispose()
    assert applied_at_kill < applied_in_the_end, "the kill should land while inputs remained to be applied"
    assert sum(value > 0 for _, value in per_instance) >= 2, per_instance
    distinct = {(event["source"], event["id"]) for event in (json.loads(m[2]) for m in messages)}
    assert expected_processed == len(distinct) + len(junk(prefix))  # the junk counts as processed too
    assert applied_in_the_end == expected_applied  # every input once (dead letters by their coordinates)
    assert sum(value for _, value in per_instance) == expected_processed

    outputs = await read_outputs(kafka_bootstrap, output_start)
    mine = [d for d in outputs["kam.dlq"] if d["offset"] >= input_start[TopicPartition(d["topic"], d["partition"])]]
    published = {"alerts": Counter((a["alert_id"], a["status"]) for a in outputs["kam.alerts"]),
                 "instructions": instructions(outputs["kam.instructions"]),
                 "notices": notices(outputs["kam.notices"]),
                 "dead letters": Counter((d["topic"], d["partition"], d["offset"]) for d in mine)}
    twice = {kind: [k for k, n in counter.items() if n > 1][:5] for kind, counter in published.items()}
    assert not any(twice.values()), twice
    assert published["instructions"] == expected_instructions
    assert published["notices"] == expected_notices
    assert dead_letters(mine) == expected_letters


"""Run a worked scenario through a real broker and a running service, and collect what it published.

Each run gets its own consumer group whose offsets start at the current end of the input
topics, so earlier messages on a shared broker do not leak in, and its own database.
Used by `onevoice demo` and the end-to-end tests.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services import kafka_clients

from consumers.service import Service
from consumers.topics import ensure_topics
from schemas.registry import INPUT_TOPICS
from services.config import Settings
from services.scenarios import decision_event, message_bytes, summarise
from services.store import tables as t

OUTPUT_TOPICS = ("kam.alerts", "kam.instructions", "kam.dlq")


@dataclass
class ScenarioRun:
    name: str
    summary: dict
    alerts: list[dict] = field(default_factory=list)
    instructions: list[dict] = field(default_factory=list)
    dead_letters: list[dict] = field(default_factory=list)
    seconds: float = 0.0


async def end_offsets(bootstrap: str, topics) -> dict[TopicPartition, int]:
    consumer = kafka_clients.consumer(bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(tp, p) for tp in topics for p in sorted(consumer.partitions_for_topic(tp) or [])]
        if any(not consumer.partitions_for_topic(tp) for tp in topics):
            await consumer._client.force_metadata_update()
            partitions = [TopicPartition(tp, p) for tp in topics for p in sorted(consumer.partitions_for_topic(tp) or [])]
        return await consumer.end_offsets(partitions) if partitions else {}
    finally:
        await consumer.stop()


async def start_group_at(bootstrap: str, group_id: str, offsets: dict[TopicPartition, int]) -> None:
    """Commit `offsets` for a group that has not consumed yet, so it starts there instead of the beginning."""
    consumer = kafka_clients.consumer(bootstrap, group_id=group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit({tp: off for tp, off in offsets.items()})
    finally:
        await consumer.stop()


async def group_caught_up(admin: AIOKafkaAdminClient, group_id: str, targets: dict[TopicPartition, int]) -> bool:
    committed = await admin.list_consumer_group_offsets(group_id)
    return all((committed.get(tp).offset if committed.get(tp) else -1) >= end for tp, end in targets.items() if end)


async def wait_until_caught_up(bootstrap: str, group_id: str, timeout_s: float = 60.0,
                               drained: Callable[[], bool] | None = None) -> None:
    """Until the group's committed offsets reach the current end of the input topics (and `drained()`)."""
    targets = await end_offsets(bootstrap, INPUT_TOPICS)
    admin = kafka_clients.admin(bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await group_caught_up(admin, group_id, targets) and (drained is None or drained()):
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"group {group_id} did not catch up within {timeout_s}s")
    finally:
        await admin.close()


async def read_outputs(bootstrap: str, since: dict[TopicPartition, int]) -> dict[str, list[dict]]:
    """Every message on the output topics from `since` to their current end."""
    ends = await end_offsets(bootstrap, OUTPUT_TOPICS)
    out: dict[str, list[dict]] = {topic: [] for topic in OUTPUT_TOPICS}
    wanted = {tp: end for tp, end in ends.items() if end > since.get(tp, 0)}
    if not wanted:
        return out
    consumer = kafka_clients.consumer(bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(wanted))
        for tp in wanted:
            consumer.seek(tp, since.get(tp, 0))
        per_partition: dict[TopicPartition, list] = {tp: [] for tp in wanted}
        remaining = dict(wanted)
        deadline = time.monotonic() + 30
        while remaining and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, messages in batch.items():
                for m in messages:
                    if m.offset < wanted[tp]:
                        per_partition[tp].append((m.timestamp, m.offset, json.loads(m.value)))
                if messages and messages[-1].offset + 1 >= wanted[tp]:
                    remaining.pop(tp, None)
        for tp, messages in per_partition.items():
            out[tp.topic].extend(messages)
    finally:
        await consumer.stop()
    # One alert's statuses share a key and so a partition: ordering by (timestamp, partition offset) keeps them in order.
    return {topic: [v for _, _, v in sorted(items, key=lambda m: (m[0], m[1]))] for topic, items in out.items()}


async def run_scenario_live(scenario: dict, *, bootstrap: str, database_url: str, group_id: str,
                            timeout_s: float = 60.0, partitions: int = 6, kafka: Settings | None = None,
                            service_kafka: Settings | None = None) -> ScenarioRun:
    """Publish the scenario's steps one after the other, each once the service has caught up with the last.

    On a secured cluster, `kafka` carries the Kafka security settings of the runner's own clients (a
    principal that may publish the inputs and decisions and read the outputs) and `service_kafka` those
    of the service (default: the same).
    """
    started = time.monotonic()
    service_security = (service_kafka or kafka).kafka_security() if (service_kafka or kafka) else {}
    if kafka is not None:  # from here on `bootstrap` is the runner's client settings (services/kafka_clients.py)
        bootstrap = kafka.model_copy(update={"kafka_bootstrap": bootstrap})
    await ensure_topics(bootstrap, partitions)
    input_ends = await end_offsets(bootstrap, INPUT_TOPICS)
    await start_group_at(bootstrap, group_id, input_ends)
    output_start = await end_offsets(bootstrap, OUTPUT_TOPICS)
    window = scenario.get("window_s")
    settings = Settings(**service_security, kafka_bootstrap=kafka_clients.bootstrap_of(bootstrap),
                        database_url=database_url, group_id=group_id,
                        partitions=partitions, decision_window_s=window if window is not None else 172800,
                        ops_interval_s=10, timer_interval_s=0.25)
    service = Service(settings)
    task = asyncio.create_task(service.run())
    producer = kafka_clients.producer(bootstrap, enable_idempotence=True, max_request_size=2 * 1024 * 1024)
    admin = kafka_clients.admin(bootstrap)
    await producer.start()
    await admin.start()
    try:
        await asyncio.wait_for(service.ready.wait(), timeout_s)

        async def settle() -> None:
            targets = await end_offsets(bootstrap, (*INPUT_TOPICS,))
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if task.done():
                    task.result()
                if await group_caught_up(admin, group_id, targets) and await asyncio.to_thread(_outbox_drained, service):
                    return
                await asyncio.sleep(0.05)
            raise TimeoutError(f"service did not catch up within {timeout_s}s")

        for index, step in enumerate(scenario["steps"]):
            if "publish" in step:
                for entry in step["publish"]:
                    topic, key, value = message_bytes(entry)
                    await producer.send_and_wait(topic, value, key=key)
            elif "decide" in step:
                decide = step["decide"]
                outputs = await read_outputs(bootstrap, output_start)
                ids = [a["alert_id"] for a in outputs["kam.alerts"] if a["fingerprint"] == decide["fingerprint"]]
                alert_id = ids[-1] if ids else f"{scenario['name']}-unknown-alert-{index}"
                event = decision_event(scenario["name"], index, alert_id, decide)
                await producer.send_and_wait("kam.decisions", json.dumps(event).encode(), key=alert_id.encode())
            elif step.get("advance"):
                await asyncio.sleep(settings.decision_window_s + 1.0)
            await settle()
        outputs = await read_outputs(bootstrap, output_start)
    finally:
        service.request_stop()
        await producer.stop()
        await admin.close()
        try:
            await asyncio.wait_for(task, 30)
        except Exception:
            if not task.done():
                task.cancel()
            raise
    alerts, instructions, dlq = outputs["kam.alerts"], outputs["kam.instructions"], outputs["kam.dlq"]
    return ScenarioRun(scenario["name"], summarise(alerts, instructions, dlq), alerts, instructions, dlq,
                       time.monotonic() - started)


def _outbox_drained(service: Service) -> bool:
    from sqlalchemy import func, select

    with service.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(t.outbox).where(t.outbox.c.sent_at.is_(None))).scalar() == 0

"""Run a worked scenario through a real broker and a running service, and collect what it published.

Each run gets its own consumer group whose offsets start at the current end of the input
topics, so earlier messages on a shared broker do not leak in, and its own database.
Used by `onevoice demo` and the end-to-end tests.

Publishing modes (CONTRACT §2: a sender chooses the content mode of each message):

- ``structured``: every message as the scenario writes it (its JSON, or its ``raw`` text);
- ``binary``: every event through the official CloudEvents SDK's Kafka binding in binary mode
  (``ce_*`` headers, the value is ``data``);
- ``mixed``: each event, at random (seeded), through the SDK in binary or in structured mode.

In ``binary`` and ``mixed`` mode, what cannot be a CloudEvent at all (a ``raw`` message, a value
whose envelope is invalid: not JSON, no specversion, ...) is sent as the scenario writes it, as
a producer would; ``ScenarioRun.modes`` counts what went which way. The SDK (package
``cloudevents``, a development dependency) is imported only for those modes.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services import kafka_clients

from consumers.service import Service
from consumers.topics import ensure_topics
from schemas.registry import INPUT_TOPICS
from services.config import Settings
from services.scenarios import decision_event, message_bytes, summarise
from services.store import tables as t

OUTPUT_TOPICS = ("kam.alerts", "kam.instructions", "kam.notices", "kam.dlq")

PublishMode = Literal["structured", "binary", "mixed"]
PUBLISH_MODES: tuple[str, ...] = ("structured", "binary", "mixed")


@dataclass
class ScenarioRun:
    name: str
    summary: dict
    alerts: list[dict] = field(default_factory=list)
    instructions: list[dict] = field(default_factory=list)
    dead_letters: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    notices: list[dict] = field(default_factory=list)
    #: messages sent per way: "as written", "sdk binary", "sdk structured"
    modes: Counter = field(default_factory=Counter)


class ScenarioPublisher:
    """Turns a scenario's messages into Kafka messages in the chosen publishing mode (module docstring)."""

    def __init__(self, mode: PublishMode = "structured", seed: int = 0) -> None:
        if mode not in PUBLISH_MODES:
            raise ValueError(f"publishing mode must be one of {', '.join(PUBLISH_MODES)}, not {mode!r}")
        self.mode = mode
        self.random = random.Random(seed)
        self.modes: Counter = Counter()

    def entry(self, entry: dict) -> tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]:
        """(topic, key, value, headers) of one `publish` entry."""
        topic, key, value = message_bytes(entry)
        event = entry.get("value") if "raw" not in entry else None
        headers, value = self.event(event, value)
        return topic, key, value, headers

    def event(self, event: dict | None, as_written: bytes) -> tuple[list[tuple[str, bytes]], bytes]:
        """(headers, value) of one event: `as_written` unless the mode sends it through the SDK."""
        if self.mode == "structured" or not _is_cloud_event(event):
            self.modes["as written"] += 1
            return [], as_written
        binary = self.mode == "binary" or self.random.random() < 0.5
        self.modes["sdk binary" if binary else "sdk structured"] += 1
        return sdk_message(event, "binary" if binary else "structured")


def _is_cloud_event(event) -> bool:
    """Whether the SDK can carry `event` as it is: a valid envelope (its data may still be invalid)."""
    from pydantic import ValidationError

    from schemas.envelope import CloudEvent

    if not isinstance(event, dict):
        return False
    try:
        CloudEvent.model_validate(event)
    except ValidationError:
        return False
    return True


def sdk_message(event: dict, mode: Literal["binary", "structured"]) -> tuple[list[tuple[str, bytes]], bytes]:
    """(headers, value) of a structured event dict, written by the official CloudEvents SDK (2.x core API)."""
    from cloudevents.core.bindings import kafka as ce_kafka
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.core.v1.event import CloudEvent as SdkEvent

    attributes = {name: value for name, value in event.items() if name != "data" and value is not None}
    attributes["time"] = datetime.fromisoformat(attributes["time"])
    attributes.setdefault("datacontenttype", "application/json")
    convert = ce_kafka.to_binary if mode == "binary" else ce_kafka.to_structured
    message = convert(SdkEvent(attributes, event["data"]), JSONFormat())
    return list(message.headers.items()), message.value


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
                            service_kafka: Settings | None = None, mode: PublishMode = "structured",
                            seed: int = 0) -> ScenarioRun:
    """Publish the scenario's steps one after the other, each once the service has caught up with the last.

    `mode` is the publishing mode (module docstring), `seed` chooses the content modes in ``mixed``.
    The summary holds kam.notices too: a scenario expects exactly its `expect.notices`.

    On a secured cluster, `kafka` carries the Kafka security settings of the runner's own clients (a
    principal that may publish the inputs and decisions and read the outputs) and `service_kafka` those
    of the service (default: the same).
    """
    started = time.monotonic()
    publisher = ScenarioPublisher(mode, seed)
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
                    topic, key, value, headers = publisher.entry(entry)
                    await producer.send_and_wait(topic, value, key=key, headers=headers or None)
            elif "decide" in step:
                decide = step["decide"]
                outputs = await read_outputs(bootstrap, output_start)
                ids = [a["alert_id"] for a in outputs["kam.alerts"] if a["fingerprint"] == decide["fingerprint"]]
                alert_id = ids[-1] if ids else f"{scenario['name']}-unknown-alert-{index}"
                event = decision_event(scenario["name"], index, alert_id, decide)
                headers, value = publisher.event(event, json.dumps(event).encode())
                await producer.send_and_wait("kam.decisions", value, key=alert_id.encode(), headers=headers or None)
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
    notices = outputs["kam.notices"]
    return ScenarioRun(scenario["name"], summarise(alerts, instructions, dlq, notices), alerts, instructions, dlq,
                       time.monotonic() - started, notices, publisher.modes)


def _outbox_drained(service: Service) -> bool:
    from sqlalchemy import func, select

    with service.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(t.outbox).where(t.outbox.c.sent_at.is_(None))).scalar() == 0

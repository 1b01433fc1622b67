"""The Kafka side of a worked scenario run: publish its messages, follow a group's offsets, read the outputs.

consumers/live_scenarios.py runs a scenario through a real broker and a running service with
these (for `onevoice demo` and the end-to-end tests); tests and benchmarks use them around
services of their own.

Publishing modes (CONTRACT §2: a sender chooses the content mode of each message):

- ``structured``: every message as the scenario writes it (its JSON, or its ``raw`` text);
- ``binary``: every event through the official CloudEvents SDK's Kafka binding in binary mode
  (``ce_*`` headers, the value is ``data``);
- ``mixed``: each event, at random (seeded), through the SDK in binary or in structured mode.

In ``binary`` and ``mixed`` mode, what cannot be a CloudEvent at all (a ``raw`` message, a value
whose envelope is invalid: not JSON, no specversion, ...) is sent as the scenario writes it, as
a producer would; ``ScenarioPublisher.modes`` counts what went which way. The SDK (package
``cloudevents``, a development dependency) is imported only for those modes.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Literal

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas.registry import INPUT_TOPICS
from services import kafka_clients
from services.scenarios import message_bytes

OUTPUT_TOPICS = ("kam.alerts", "kam.instructions", "kam.notices", "kam.dlq")

PublishMode = Literal["structured", "binary", "mixed"]
PUBLISH_MODES: tuple[str, ...] = ("structured", "binary", "mixed")


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

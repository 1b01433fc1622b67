"""Taking the relay's lease over: mark sent what a previous holder published but did not mark.

The relay records, with each marking, how far it has published in every output partition. A new
holder reads the messages after those offsets, marks the rows whose header names this store as
sent, and reads the output topics' size limits from the broker, before publishing anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from sqlalchemy import select

from schemas.registry import RELAYED_TOPICS
from services import kafka_clients
from services.kafka_clients import KafkaTarget
from services.outbox.records import DEFAULT_MESSAGE_LIMIT, HEADER
from services.store import tables as t
from services.store.db import insert_stmt

log = logging.getLogger("onevoice.outbox")


async def output_partitions(target: KafkaTarget) -> list[TopicPartition]:
    admin = kafka_clients.admin(target)
    await admin.start()
    try:
        described = await admin.describe_topics(list(RELAYED_TOPICS))
    finally:
        await admin.close()
    return sorted(TopicPartition(d["topic"], p["partition"]) for d in described for p in d.get("partitions") or [])


async def message_limits(target: KafkaTarget, topics=RELAYED_TOPICS) -> dict[str, int]:
    """Each topic's `max.message.bytes` as the broker reports it (its own default when not overridden)."""
    admin = kafka_clients.admin(target)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": None}) for topic in topics])
    finally:
        await admin.close()
    limits = {}
    for response in responses:
        for error_code, _message, _type, name, entries in (tuple(r)[:5] for r in response.resources):
            for entry in entries if not error_code else ():
                if entry[0] == "max.message.bytes" and entry[1]:
                    limits[name] = int(entry[1])
    return limits


class Takeover:
    """The `OutboxRelay`'s takeover (state: `_store_id`, `limits`, `recovered`; marking through `_mark_sent`)."""

    async def recover(self) -> int:
        """Mark as sent the rows a previous holder published but died before marking; returns how many."""
        self._store_id = await asyncio.to_thread(self._load_store_id)
        positions = await asyncio.to_thread(self._positions)
        partitions = await output_partitions(self.bootstrap)
        await self._load_limits()
        consumer = kafka_clients.consumer(self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            ends = await consumer.end_offsets(partitions) if partitions else {}
            scan = {tp: positions[tp] for tp, end in ends.items() if tp in positions and positions[tp] < end}
            found = await self._published_ids(consumer, scan, ends) if scan else []
            log.debug("outbox recovery: %d partitions, %d behind, %d outputs found", len(ends), len(scan), len(found))
        finally:
            await consumer.stop()
        # Partitions never written by this store start at their current end: nothing of ours lies before it.
        await asyncio.to_thread(self._mark_sent, found, {tp: end for tp, end in ends.items()})
        self.recovered += len(found)
        if found:
            log.info("took over the outbox: %d outputs were already published, marked them sent", len(found))
        return len(found)

    async def _published_ids(self, consumer: AIOKafkaConsumer, scan: dict[TopicPartition, int],
                             ends: dict[TopicPartition, int]) -> list[int]:
        consumer.assign(list(scan))
        for tp, offset in scan.items():
            consumer.seek(tp, offset)
        prefix = f"{self._store_id}:".encode()
        found, remaining = [], dict(scan)
        deadline = time.monotonic() + 60
        while remaining and time.monotonic() < deadline:
            for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                for message in messages:
                    for name, value in message.headers or ():
                        if name == HEADER and value.startswith(prefix):
                            found.append(int(value[len(prefix):]))
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    remaining.pop(tp, None)
        if remaining:
            raise RuntimeError(f"could not read back {sorted(map(str, remaining))} to take over the outbox")
        return found

    async def _load_limits(self, *, replace: bool = False) -> None:
        """The topics' limits from the broker; unless `replace`, a smaller limit learned from a refusal stays."""
        try:
            limits = await message_limits(self.bootstrap)
        except Exception as exc:  # e.g. no DescribeConfigs ACL: the broker's default, and refusals teach the rest
            log.warning("could not read max.message.bytes of the output topics (%s); assuming %d until the broker "
                        "refuses less", type(exc).__name__, DEFAULT_MESSAGE_LIMIT)
            return
        for topic, limit in limits.items():
            self.limits[topic] = limit if replace else min(limit, self.limits.get(topic, limit))

    def _load_store_id(self) -> str:
        with self.engine.begin() as conn:
            conn.execute(insert_stmt(conn, t.store_meta).values(name="store_id", value=uuid.uuid4().hex)
                         .on_conflict_do_nothing())
            return conn.execute(select(t.store_meta.c.value).where(t.store_meta.c.name == "store_id")).scalar_one()

    def _positions(self) -> dict[TopicPartition, int]:
        with self.engine.connect() as conn:
            return {TopicPartition(r.topic, r.partition): r.next_offset
                    for r in conn.execute(select(t.relay_positions))}

"""Consumer lag as Kafka tools report it: log end offset minus the group's committed offset, per partition.

Committed offsets come from the admin API (`OffsetFetch` for the group), end offsets from a
consumer that does not join any group: reading them takes no part in the group's coordination
(PLATFORM-NOTES: a client with the service's group id would). A partition the group never
committed counts from the log start, as a new group starting at the earliest offset would.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (CoordinatorLoadInProgressError, GroupCoordinatorNotAvailableError,
                             NotCoordinatorForGroupError)

from schemas.registry import INPUT_TOPICS


async def input_partitions(consumer: AIOKafkaConsumer, topics=INPUT_TOPICS) -> list[TopicPartition]:
    """The partitions of the input topics that exist on the broker now."""
    known = {topic: consumer.partitions_for_topic(topic) for topic in topics}
    if any(not parts for parts in known.values()):
        await consumer._client.force_metadata_update()
        known = {topic: consumer.partitions_for_topic(topic) for topic in topics}
    return [TopicPartition(topic, p) for topic, parts in known.items() for p in sorted(parts or ())]


async def group_lag(admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer, group_id: str,
                    topics=INPUT_TOPICS) -> dict[tuple[str, int], int]:
    """(topic, partition) -> messages the group has not committed yet, for every input partition."""
    partitions = await input_partitions(consumer, topics)
    if not partitions:
        return {}
    ends = await consumer.end_offsets(partitions)
    committed = await _committed_offsets(admin, group_id)
    starts = None
    lag = {}
    for tp in partitions:
        meta = committed.get(tp)
        if meta is None or meta.offset < 0:
            if starts is None:
                starts = await consumer.beginning_offsets(partitions)
            done = starts[tp]
        else:
            done = meta.offset
        lag[(tp.topic, tp.partition)] = max(0, ends[tp] - done)
    return lag


COORDINATOR_WAIT_S = 10.0  # a fresh broker creates its offsets topic on the first group request


async def _committed_offsets(admin: AIOKafkaAdminClient, group_id: str) -> dict:
    """The group's committed offsets, waiting out a group coordinator that is still being set up."""
    deadline = time.monotonic() + COORDINATOR_WAIT_S
    while True:
        try:
            return await admin.list_consumer_group_offsets(group_id)
        except (GroupCoordinatorNotAvailableError, NotCoordinatorForGroupError, CoordinatorLoadInProgressError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


class LagProbe:
    """An admin client and a group-less consumer, opened once and reused for every measurement."""

    def __init__(self, client_options: dict, group_id: str):
        self.client_options = client_options
        self.group_id = group_id
        self.admin: AIOKafkaAdminClient | None = None
        self.consumer: AIOKafkaConsumer | None = None

    async def measure(self) -> dict[tuple[str, int], int]:
        if self.admin is None:
            admin = AIOKafkaAdminClient(request_timeout_ms=10000, **self.client_options)
            consumer = AIOKafkaConsumer(enable_auto_commit=False, request_timeout_ms=10000, **self.client_options)
            try:
                await admin.start()
                await consumer.start()
            except Exception:
                await _close(admin, consumer)
                raise
            self.admin, self.consumer = admin, consumer
        try:
            return await group_lag(self.admin, self.consumer, self.group_id)
        except Exception:
            await self.close()  # reconnect next time: the broker may have restarted meanwhile
            raise

    async def close(self) -> None:
        admin, consumer, self.admin, self.consumer = self.admin, self.consumer, None, None
        await _close(admin, consumer)


async def _close(admin, consumer) -> None:
    for closing in (admin.close() if admin else None, consumer.stop() if consumer else None):
        if closing is not None:
            try:
                await closing
            except Exception:
                pass

"""Create the input and output topics the service needs (CONTRACT §1: missing topics are created at start)."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from schemas.registry import INPUT_TOPICS, OUTPUT_TOPICS
from services import kafka_clients
from services.kafka_clients import KafkaTarget

log = logging.getLogger("onevoice.topics")
ALL_TOPICS = (*INPUT_TOPICS, *OUTPUT_TOPICS)


async def ensure_topics(target: KafkaTarget, partitions: int, topics: tuple[str, ...] = ALL_TOPICS,
                        replication_factor: int | None = None) -> list[str]:
    """Create whichever of `topics` are missing; returns the ones created. Safe to race with other processes.

    `target` is the Settings (security included) or a plaintext bootstrap address; the replication
    factor is the Settings' (ONEVOICE_REPLICATION_FACTOR) unless given, else 1.
    """
    if replication_factor is None:
        replication_factor = getattr(target, "replication_factor", 1)
    admin = kafka_clients.admin(target, request_timeout_ms=30000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in topics if name not in existing]
        if missing:
            try:
                result = await admin.create_topics(
                    [NewTopic(name, num_partitions=partitions, replication_factor=replication_factor) for name in missing])
                for name, code, *_ in getattr(result, "topic_errors", []):
                    if code not in (0, TopicAlreadyExistsError.errno):
                        raise RuntimeError(f"could not create topic {name}: error code {code}")
            except TopicAlreadyExistsError:
                pass
            log.info("created topics %s", ", ".join(missing))
        for _ in range(100):  # wait until the new topics have leaders, so the first requests do not bounce
            described = await admin.describe_topics(list(topics))
            if all(not d.get("error_code") and d.get("partitions") and
                   all(p.get("leader", -1) >= 0 for p in d["partitions"]) for d in described):
                break
            await asyncio.sleep(0.1)
        return missing
    finally:
        await admin.close()

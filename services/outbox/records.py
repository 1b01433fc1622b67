"""What a published output is on the wire: the header naming its row, its partition, its size bounds."""

from __future__ import annotations

import functools
import random

from aiokafka.partitioner import murmur2

HEADER = "onevoice-outbox"  # value `<store id>:<row id>`: how a takeover recognises outputs already published
#: Kafka's default `max.message.bytes` of a topic: the largest record batch it takes.
DEFAULT_MESSAGE_LIMIT = 1048588
BATCH_OVERHEAD = 61  # a record batch's header (DefaultRecordBatch.HEADER_STRUCT)
RECORD_OVERHEAD = 21  # a record's most framing beyond its key, value and headers (MAX_RECORD_OVERHEAD)


def partition_of(key: bytes | None, partitions: list[int]) -> int:
    """Kafka's default partitioner: murmur2 of the key; a keyless record goes to any partition."""
    if key is None:
        return random.choice(partitions)
    return partitions[(_murmur2(key) & 0x7FFFFFFF) % len(partitions)]


@functools.lru_cache(maxsize=65536)
def _murmur2(key: bytes) -> int:
    return murmur2(key)  # pure Python in aiokafka; output keys (assignees, references) repeat

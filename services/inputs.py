"""Input messages as the consumer fetched them, and their decoding into events (pure, no I/O).

Decoding runs ahead of the transaction (the service decodes the next batch while the current
one waits on the database), so it lives apart from the processor that applies the events.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from schemas.decode import Event, InvalidMessage, decode_event

log = logging.getLogger("onevoice.inputs")


@dataclass(frozen=True)
class InputRecord:
    """One Kafka message as the consumer fetched it (aiokafka's ConsumerRecord has the same attributes and is
    passed as it is). ``headers`` decide the content mode (CONTRACT §2): a ``ce_specversion`` header means
    binary mode."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


def decode_records(records: list[InputRecord]) -> list[Event | InvalidMessage]:
    """Each record's event, or why it cannot be used (its content mode by its headers, checked against its topic)."""
    decoded: list[Event | InvalidMessage] = []
    for record in records:
        try:
            decoded.append(decode_event(record.value, record.headers, record.topic))
        except InvalidMessage as exc:
            decoded.append(exc)
        except Exception as exc:  # a fault of ours, not of the event: its dead letter says so, the rest goes on
            log.exception("event at %s/%d@%d could not be decoded", record.topic, record.partition, record.offset)
            decoded.append(InvalidMessage("invalid_data", f"the event could not be decoded ({type(exc).__name__}); "
                                                          "see the service log at this offset"))
    return decoded

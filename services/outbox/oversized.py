"""Outputs too large for the broker: set aside as undeliverable instead of blocking every output behind them.

An output larger than its topic accepts (`max.message.bytes`) is marked `undeliverable` (and sent,
so nothing waits for it), counted and named in one log line; such rows stay in the outbox for
`UNDELIVERABLE_KEPT`, for operators to look at. A batch the broker refuses all the same teaches the
relay a smaller limit, and its producer is replaced.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from sqlalchemy import update

from services.domain import iso
from services.outbox.records import BATCH_OVERHEAD, DEFAULT_MESSAGE_LIMIT, HEADER, RECORD_OVERHEAD
from services.store import tables as t
from services.store.state import add_to_counters

log = logging.getLogger("onevoice.outbox")
UNDELIVERABLE_KEPT = timedelta(days=30)  # set-aside rows stay in the outbox this long, for operators to look at
UNDELIVERABLE = "undeliverable"  # the ops counter


class OutputRefused(Exception):
    """The broker refused a batch as too large; handled (set aside or limit learned), the round starts over."""


class SetAside:
    """The `OutboxRelay`'s handling of oversized outputs (state: `limits`, `undeliverable`, the producer and
    its `producer_factory`)."""

    def _too_large(self, topic: str, key: str | None, value: str) -> int | None:
        """The record's size when it exceeds its topic's limit, else None (cheap bound first, exact if close)."""
        limit = self.limits.get(topic, DEFAULT_MESSAGE_LIMIT)
        if 4 * (len(value) + (len(key) if key else 0)) + 200 <= limit:  # UTF-8: at most 4 bytes per character
            return None
        key_bytes = key.encode() if key is not None else None
        value_bytes = value.encode()
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key_bytes, value_bytes, [(HEADER, b"x" * 48)])
        return size if size > limit else None

    async def _set_aside_oversized(self, rows: list[tuple]) -> list[tuple]:
        """Set aside the rows no batch of their topic could hold; returns the others, in order."""
        oversized = [(row, size) for row in rows if (size := self._too_large(row[1], row[2], row[3])) is not None]
        if not oversized:
            return rows
        await self._set_aside(oversized)
        dropped = {row[0] for row, _ in oversized}
        return [row for row in rows if row[0] not in dropped]

    async def _set_aside(self, oversized: list[tuple[tuple, int]]) -> None:
        ids = [row[0] for row, _ in oversized]
        await asyncio.to_thread(self._mark_undeliverable, oversized)
        self.undeliverable += len(ids)
        for (row_id, topic, key, _value), size in oversized:
            log.error("output %s to %s (key %r, %d bytes) is larger than the topic accepts (%d bytes): set aside "
                      "as undeliverable (outbox row kept %d days; counter %s)", row_id, topic, key, size,
                      self.limits.get(topic, DEFAULT_MESSAGE_LIMIT), UNDELIVERABLE_KEPT.days, UNDELIVERABLE)

    def _mark_undeliverable(self, oversized: list[tuple[tuple, int]]) -> None:
        now = iso(self.clock())
        with self.engine.begin() as conn:
            for (row_id, topic, _key, _value), size in oversized:
                limit = self.limits.get(topic, DEFAULT_MESSAGE_LIMIT)
                conn.execute(update(t.outbox).where(t.outbox.c.id == row_id, t.outbox.c.sent_at.is_(None))
                             .values(sent_at=now, undeliverable=f"too_large: {size} bytes > {limit} ({topic})"))
            add_to_counters(conn, self.instance, {UNDELIVERABLE: len(oversized)})

    async def _refused(self, refused: list, rows: list[tuple]) -> None:
        """The broker refused batches as too large although they fit the limit known (the topic's limit was
        lowered meanwhile): read the limits again, so that the next round sets such outputs aside before
        sending; where even that does not explain a refusal (a broker-wide limit), learn a smaller one.
        Then replace the producer: after a refused batch its sequence in that partition is broken."""
        await self._load_limits(replace=True)
        by_id = {row[0]: row for row in rows}
        single = []
        for (tp, _future, ids, size), error in refused:
            limit = self.limits.get(tp.topic, DEFAULT_MESSAGE_LIMIT)
            if size > limit:
                continue  # explained: the next round's check sets the oversized outputs aside, batches fit
            if len(ids) == 1:
                self.limits[tp.topic] = min(limit, size - 1)
                single.append((by_id[ids[0]], size))
            else:
                self.limits[tp.topic] = min(limit, max(size // 2, BATCH_OVERHEAD + RECORD_OVERHEAD + 1))
                log.warning("the broker refused a batch of %d outputs (%d bytes) to %s as too large (%s) although "
                            "the topic allows %d; sending smaller batches", len(ids), size, tp.topic,
                            type(error).__name__, limit)
        if single:
            await self._set_aside(single)
        if self.producer_factory is not None:
            old, self.producer = self.producer, self.producer_factory()
            await self.producer.start()
            self._partitions.clear()
            if old is self._own_producer:
                await old.stop()
            self._own_producer = self.producer

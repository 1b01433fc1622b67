"""Marking published rows sent (with how far each partition was published), and pruning set-aside rows.

A published row is marked sent by deleting it: Kafka holds it now, and nothing reads a sent row
back. On durable PostgreSQL the earlier `UPDATE … SET sent_at` cost the server 20 µs per output
(a new row version and a new index entry: `sent_at` is in the partial index's predicate), and the
prune deleted the row ten minutes later; the `DELETE` alone costs 8 (`bench/outbox_marking.py`,
bench/RESULTS.md 2026-12-02). Rows the broker refused keep `sent_at` and `undeliverable`
(`oversized.py`) until `_prune` forgets them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from aiokafka import TopicPartition
from sqlalchemy import and_, delete, or_

from services.domain import iso
from services.outages import report_outage
from services.outbox.oversized import UNDELIVERABLE_KEPT
from services.store import tables as t
from services.store.bulk import bulk_insert, json_list, sqlite_rows

log = logging.getLogger("onevoice.outbox")
MARK_INTERVAL_S = 0.05
RECENT_IDS = 100_000  # published ids remembered (at least those not yet marked sent)


class Marking:
    """The `OutboxRelay`'s marking (state: `_unmarked`, `_marking_now`, `_unmarked_positions`, `_marking`,
    and the published ids it may forget once marked: `_recently_published`, `_published_order`)."""

    async def _mark_in_background(self) -> None:
        """Mark published rows sent, one transaction at a time, each taking all that was published meanwhile.

        At most one marking per `MARK_INTERVAL_S`: at moderate rates every batch would otherwise
        cost a second transaction, competing with the next batch for the interpreter.
        """
        while self._unmarked:
            await asyncio.sleep(MARK_INTERVAL_S)
            ids, self._unmarked = self._unmarked, []
            self._marking_now = ids
            positions, self._unmarked_positions = self._unmarked_positions, {}
            began = time.perf_counter()
            try:
                await asyncio.to_thread(self._mark_sent, ids, positions)
            except Exception as exc:
                # Published but unmarked: kept in memory for the next try; a successor's `recover` finds them.
                if not report_outage(exc):
                    log.exception("could not mark %d published outputs sent; will try again", len(ids))
                self._unmarked[:0] = ids
                self._marking_now = []
                for tp, offset in positions.items():
                    self._unmarked_positions[tp] = max(self._unmarked_positions.get(tp, 0), offset)
                await asyncio.sleep(1.0)
                continue
            self._marking_now = []
            log.debug("marked %d outputs sent in %.1f ms", len(ids), (time.perf_counter() - began) * 1000)
            # Forget the oldest published ids only now: all of them are marked (marking follows publishing
            # order), so the store will not offer them again. Before, a lagging marking could let an
            # evicted id be read back as unsent and published twice.
            while len(self._published_order) > RECENT_IDS:
                self._recently_published.discard(self._published_order.popleft())

    async def marked(self, timeout: float | None = None) -> None:
        """Wait until every published row is marked sent in the store (or `timeout` seconds passed)."""
        if self._marking is not None and not self._marking.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._marking), timeout)
            except asyncio.TimeoutError:
                log.warning("%d published outputs are not marked sent; the next relay will find them in Kafka",
                            len(self._unmarked))

    def _mark_sent(self, ids: list[int], positions: dict[TopicPartition, int]) -> None:
        """Mark rows sent (delete them, see the module's docstring) and record how far each partition was
        published, in one transaction. A row set aside as undeliverable stays (it has `sent_at`)."""
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # fixed statements: no SQLAlchemy construct per marking
                with conn.connection.dbapi_connection.cursor() as cursor:
                    if ids:
                        cursor.execute("DELETE FROM outbox WHERE id = ANY(%(ids)b::bigint[]) AND sent_at IS NULL",
                                       {"ids": ids})
                    if positions:
                        cursor.execute(
                            'INSERT INTO relay_positions (topic, "partition", next_offset) '
                            "SELECT * FROM unnest(%(topics)s::VARCHAR[], %(partitions)s::INTEGER[], "
                            "%(offsets)s::BIGINT[]) "
                            'ON CONFLICT (topic, "partition") DO UPDATE SET next_offset = EXCLUDED.next_offset',
                            {"topics": [tp.topic for tp in positions], "partitions": [tp.partition for tp in positions],
                             "offsets": list(positions.values())})
                return
            # SQLite: one fixed statement, the ids as one JSON list; the write lock it takes is the batch writer's,
            # so the shorter it holds it the better (built with SQLAlchemy, 500 ids at a time, it took longer)
            if ids:
                sqlite_rows(conn, "DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?)) AND sent_at IS NULL",
                            (json_list(ids),))
            if positions:
                bulk_insert(conn, t.relay_positions, [{"topic": tp.topic, "partition": tp.partition,
                                                       "next_offset": offset} for tp, offset in positions.items()],
                            conflict=("topic", "partition"), update=True)

    def _prune(self) -> None:
        """Forget set-aside rows after 30 days (and sent rows an earlier version kept, ten minutes after sending)."""
        cutoff = iso(self.clock() - timedelta(minutes=10))
        kept_until = iso(self.clock() - UNDELIVERABLE_KEPT)
        with self.engine.begin() as conn:
            c = t.outbox.c
            conn.execute(delete(t.outbox).where(c.sent_at.is_not(None), or_(
                and_(c.undeliverable.is_(None), c.sent_at < cutoff), c.sent_at < kept_until)))

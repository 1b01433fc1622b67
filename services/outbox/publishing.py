"""Publishing: unsent outbox rows to Kafka, in id order, as one record batch per partition."""

from __future__ import annotations

import asyncio
import time

from aiokafka import TopicPartition
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError
from sqlalchemy import select

from services.outages import KAFKA, OUTAGES
from services.outbox.oversized import OutputRefused
from services.outbox.records import BATCH_OVERHEAD, DEFAULT_MESSAGE_LIMIT, HEADER, RECORD_OVERHEAD, partition_of
from services.store import tables as t
from services.store.db import READ_ONLY


class Publishing:
    """The `OutboxRelay`'s publishing (state: `producer`, `batch`, `limits`, `_partitions`, what is published
    and not yet marked; oversized rows go to `_set_aside_oversized`, marking to `_mark_in_background`)."""

    async def publish_pending(self) -> int:
        """Publish one batch of unsent rows in id order; returns how many were published."""
        # The rows this process published but has not yet marked sent are not read back: at 5,000
        # events/s they were most of what a poll returned (27,000 of 35,000 outputs in a run).
        rows = await asyncio.to_thread(self._pending, self._marking_now + self._unmarked)
        if len(rows) == self.batch:
            self._read_store = True  # there may be more behind them
        # Rows this process published are unsent in the store until their marking lands.
        return await self._publish([tuple(r) for r in rows if r[0] not in self._recently_published])

    async def _publish(self, rows: list[tuple]) -> int:
        """Send (id, topic, key, value) rows in order and wait for the acks; returns how many.

        Marking them sent happens in the background (`_mark_in_background`), so the next outputs
        need not wait for that transaction: until it lands, `_recently_published` keeps this
        process from sending them again, and after a crash `recover` finds them in Kafka.
        """
        rows = await self._set_aside_oversized(rows)
        if not rows:
            return 0
        sent = await self._send_in_batches(rows)
        results = await asyncio.gather(*(future for _, future, _, _ in sent), return_exceptions=True)
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            refused = [(batch, result) for batch, result in zip(sent, results)
                       if isinstance(result, (MessageSizeTooLargeError, RecordListTooLargeError))]
            if refused:
                await self._refused(refused, rows)
                raise OutputRefused(f"{len(refused)} batches refused as too large")
            raise failures[0]
        OUTAGES.recovered(KAFKA)
        acked = [(tp, metadata.offset + len(ids)) for (tp, _, ids, _), metadata in zip(sent, results)]
        for row_id, *_ in rows:
            self._recently_published.add(row_id)
            self._published_order.append(row_id)
        positions = self._unmarked_positions
        for tp, next_offset in acked:
            positions[tp] = max(positions.get(tp, 0), next_offset)
        self._unmarked.extend(r[0] for r in rows)
        if self._marking is None or self._marking.done():
            self._marking = asyncio.create_task(self._mark_in_background(), name="outbox-marking")
        self.sent += len(rows)
        return len(rows)

    async def _send_in_batches(self, rows: list[tuple]) -> list[tuple[TopicPartition, asyncio.Future, list[int], int]]:
        """Hand the rows to the producer as one record batch per partition (in row order within each).

        Sending message by message cost more Python than marking and publishing together: a
        coroutine, a future and a partitioner call per output. Partitions are those of Kafka's
        default partitioner (murmur2 of the key), so consumers see what any Kafka client would do.
        A batch never grows beyond its topic's limit. Returns (partition, future of the batch's
        first offset, row ids in it, its estimated size) per batch.
        """
        prefix = f"{self._store_id}:"
        partitions = {}
        for topic in {r[1] for r in rows}:
            known = self._partitions.get(topic)
            if known is None or time.monotonic() > known[0]:  # re-read now and then: partitions can be added
                known = self._partitions[topic] = (time.monotonic() + 60,
                                                   sorted(await self.producer.partitions_for(topic)))
            partitions[topic] = known[1]
        open_batches: dict[TopicPartition, list] = {}  # partition -> [builder, row ids in it, estimated size]
        sent = []
        for row_id, topic, key, value in rows:
            key_bytes = key.encode() if key is not None else None
            tp = TopicPartition(topic, partition_of(key_bytes, partitions[topic]))
            header = f"{prefix}{row_id}".encode()
            value_bytes = value.encode()
            size = len(value_bytes) + (len(key_bytes) if key_bytes else 0) + len(header) + RECORD_OVERHEAD
            batch = open_batches.get(tp)
            if batch is not None and batch[2] + size > self.limits.get(topic, DEFAULT_MESSAGE_LIMIT):
                sent.append((tp, await self.producer.send_batch(batch[0], topic, partition=tp.partition),
                             batch[1], batch[2]))
                batch = None
            if batch is None:
                batch = open_batches[tp] = [self.producer.create_batch(), [], BATCH_OVERHEAD]
            record = dict(timestamp=None, key=key_bytes, value=value_bytes, headers=[(HEADER, header)])
            if batch[0].append(**record) is None:  # full: send it, go on in a new one (a first record always fits)
                sent.append((tp, await self.producer.send_batch(batch[0], topic, partition=tp.partition),
                             batch[1], batch[2]))
                batch = open_batches[tp] = [self.producer.create_batch(), [], BATCH_OVERHEAD]
                batch[0].append(**record)
            batch[1].append(row_id)
            batch[2] += size
        for tp, (builder, ids, size) in open_batches.items():
            sent.append((tp, await self.producer.send_batch(builder, tp.topic, partition=tp.partition), ids, size))
        return sent

    def _pending(self, published: list[int]):
        """Up to a batch of unsent rows in id order, leaving out those `published` (not yet marked sent)."""
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            if conn.dialect.name == "postgresql":
                # NOT IN a subquery is a hashed set; `<> ALL(array)` compared each row with every id: 30 ms
                with conn.connection.dbapi_connection.cursor() as cursor:
                    cursor.execute("SELECT id, topic, key, value FROM outbox WHERE sent_at IS NULL "
                                   "AND id NOT IN (SELECT unnest(%(published)b::bigint[])) ORDER BY id LIMIT %(limit)s",
                                   {"published": published, "limit": self.batch})
                    return cursor.fetchall()
            # SQLite: ids as bound parameters could exceed its limit; the caller filters them out instead
            return conn.execute(select(t.outbox.c.id, t.outbox.c.topic, t.outbox.c.key, t.outbox.c.value)
                                .where(t.outbox.c.sent_at.is_(None)).order_by(t.outbox.c.id).limit(self.batch)).all()

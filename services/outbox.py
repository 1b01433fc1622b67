"""The outbox relay: publishes committed outputs to Kafka, in commit order, then marks them sent.

Only the holder of the `outbox-relay` lease publishes, so outputs of one alert keep their
order even with several processes. The producer is idempotent (no duplicates from its own
retries). A crash between publishing and marking would repeat the unmarked rows, so every
message carries a header `onevoice-outbox: <store id>:<row id>`, and the relay records, in the
transaction that marks rows sent, the offset it has published up to in each output partition.
Whoever takes the lease next reads the few messages after those offsets and marks the rows it
finds there as sent before publishing anything: no output is repeated, none is lost.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import random
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2
from sqlalchemy import Engine, delete, select, update

from schemas.registry import RELAYED_TOPICS
from services.domain import iso
from services.domain import utcnow
from services.store import tables as t
from services.store.db import insert_stmt
from services.store.lease import hold_lease, release_lease

log = logging.getLogger("onevoice.outbox")
LEASE = "outbox-relay"
HEADER = "onevoice-outbox"
MARK_INTERVAL_S = 0.05
STORE_POLL_S = 0.25  # how often the lease holder looks for outputs that other processes committed
RETRY_S = 1.0  # pause after a failed round (database or Kafka unreachable)
RECENT_IDS = 100_000  # published ids remembered (at least those not yet marked sent)


async def output_partitions(bootstrap: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(list(RELAYED_TOPICS))
    finally:
        await admin.close()
    return sorted(TopicPartition(d["topic"], p["partition"]) for d in described for p in d.get("partitions") or [])


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Wait `seconds` or until `stop`, whatever wakes the relay meanwhile (see `OutboxRelay._sleep`)."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def partition_of(key: bytes | None, partitions: list[int]) -> int:
    """Kafka's default partitioner: murmur2 of the key; a keyless record goes to any partition."""
    if key is None:
        return random.choice(partitions)
    return partitions[(_murmur2(key) & 0x7FFFFFFF) % len(partitions)]


@functools.lru_cache(maxsize=65536)
def _murmur2(key: bytes) -> int:
    return murmur2(key)  # pure Python in aiokafka; output keys (assignees, references) repeat


class OutboxRelay:
    def __init__(self, engine: Engine, producer: AIOKafkaProducer, *, instance: str, bootstrap: str,
                 batch: int = 2000, lease_ttl_s: float = 10.0, clock: Callable[[], datetime] = utcnow):
        self.engine = engine
        self.producer = producer
        self.instance = instance
        self.bootstrap = bootstrap
        self.batch = batch
        self.lease_ttl_s = lease_ttl_s
        self.clock = clock
        self.wake = asyncio.Event()
        self.sent = 0
        self._committed: list[tuple] = []  # (id, topic, key, value) this process just committed, in id order
        self._read_store = True  # something may be unsent that only the store knows of
        self._recently_published: set[int] = set()
        self._published_order: collections.deque[int] = collections.deque()
        self._unmarked: list[int] = []  # published and acknowledged, not yet marked sent in the store
        self._marking_now: list[int] = []  # being marked sent by the running marking transaction
        self._unmarked_positions: dict[TopicPartition, int] = {}
        self._marking: asyncio.Task | None = None
        self._partitions: dict[str, tuple[float, list[int]]] = {}  # topic -> (valid until, partitions)
        self.recovered = 0
        self._lease_until = 0.0
        self._holding = False
        self._store_id: str | None = None

    def notify(self) -> None:
        """Something was committed to the outbox: publish it now rather than at the next poll."""
        self._read_store = True
        self.wake.set()

    def publish_committed(self, rows: list[tuple]) -> None:
        """Outputs this process has just committed, as (id, topic, key, value): publish them without reading
        them back from the store (when this process holds the lease; otherwise the holder reads them)."""
        if rows:
            self._committed.extend(rows)
            self.wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        self._next_store_read, self._next_prune = loop.time(), loop.time() + 60
        try:
            while not stop.is_set():
                try:
                    if not await self._hold(loop):
                        # The holder publishes; our commits' wake-ups must not make us ask for the lease each time.
                        self.wake.clear()
                        await _pause(stop, 1.0)
                        continue
                    published = await self._round(loop)
                except Exception:  # the database or Kafka gone for a moment: the relay must outlive it
                    log.exception("outbox relay round failed; trying again in %.0f s", RETRY_S)
                    # Some outputs of the round may have reached Kafka unmarked: take the lease over
                    # again, as after a crash, so `recover` finds them there and they are not sent twice.
                    self._holding, self._lease_until = False, 0.0
                    await _pause(stop, RETRY_S)
                    continue
                if not published:
                    await self._sleep(stop, STORE_POLL_S)
            if self._holding:
                await self.publish_pending()  # drain what the last batch committed
        finally:
            try:
                await self.marked(timeout=10)
            finally:
                try:
                    await asyncio.to_thread(release_lease, self.engine, LEASE, self.instance)
                except Exception:
                    log.warning("could not release the relay lease; it expires in %.0f s", self.lease_ttl_s)

    async def _round(self, loop) -> int:
        """Publish what this process committed and, when due, what the store holds; returns how many."""
        self.wake.clear()  # before reading, so a commit that lands meanwhile wakes the next round
        published = 0
        if self._committed:
            rows, self._committed = self._committed, []
            published += await self._publish([r for r in rows if r[0] not in self._recently_published])
        # What this process commits arrives through `publish_committed`; the store is read when told
        # (`notify`, a takeover) and otherwise every STORE_POLL_S for outputs of other processes.
        # Reading it after every batch cost a query per batch: 8 % of the service's CPU at 500/s.
        if self._read_store or loop.time() >= self._next_store_read:
            self._read_store = False
            self._next_store_read = loop.time() + STORE_POLL_S
            published += await self.publish_pending()
        if loop.time() >= self._next_prune:
            await asyncio.to_thread(self._prune)
            self._next_prune = loop.time() + 60
        return published

    async def _hold(self, loop) -> bool:
        if loop.time() < self._lease_until:
            return True
        held = await asyncio.to_thread(hold_lease, self.engine, LEASE, self.instance, self.clock(), self.lease_ttl_s)
        if not held or not self._holding:
            self._committed.clear()  # the holder publishes them from the store; after a takeover, so do we
            self._read_store = True
        if held and not self._holding:
            await self.recover()
        self._holding = held
        if held:
            self._lease_until = loop.time() + self.lease_ttl_s / 3
        return held

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        waiters = [asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(stop.wait())]
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()

    # -- taking over ----------------------------------------------------------------------

    async def recover(self) -> int:
        """Mark as sent the rows a previous holder published but died before marking; returns how many."""
        self._store_id = await asyncio.to_thread(self._load_store_id)
        positions = await asyncio.to_thread(self._positions)
        partitions = await output_partitions(self.bootstrap)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            ends = await consumer.end_offsets(partitions) if partitions else {}
            scan = {tp: positions[tp] for tp, end in ends.items() if tp in positions and positions[tp] < end}
            found = await self._published_ids(consumer, scan, ends) if scan else []
            log.debug("outbox recovery: %d partitions, %d behind, %d outputs found", len(ends), len(scan), len(found))
        finally:
            await consumer.stop()
        # Partitions never written by this store start at their current end: nothing of ours lies before it.
        await asyncio.to_thread(self._mark_sent, found, {tp: end for tp, end in ends.items()}, only_unsent=True)
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

    def _load_store_id(self) -> str:
        with self.engine.begin() as conn:
            conn.execute(insert_stmt(conn, t.store_meta).values(name="store_id", value=uuid.uuid4().hex)
                         .on_conflict_do_nothing())
            return conn.execute(select(t.store_meta.c.value).where(t.store_meta.c.name == "store_id")).scalar_one()

    def _positions(self) -> dict[TopicPartition, int]:
        with self.engine.connect() as conn:
            return {TopicPartition(r.topic, r.partition): r.next_offset
                    for r in conn.execute(select(t.relay_positions))}

    # -- publishing -----------------------------------------------------------------------

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
        if not rows:
            return 0
        sent = await self._send_in_batches(rows)
        acked = [(tp, (await future).offset + count) for tp, future, count in sent]
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

    async def _send_in_batches(self, rows: list[tuple]) -> list[tuple[TopicPartition, asyncio.Future, int]]:
        """Hand the rows to the producer as one record batch per partition (in row order within each).

        Sending message by message cost more Python than marking and publishing together: a
        coroutine, a future and a partitioner call per output. Partitions are those of Kafka's
        default partitioner (murmur2 of the key), so consumers see what any Kafka client would do.
        Returns (partition, future of the batch's first offset, number of records) per batch.
        """
        prefix = f"{self._store_id}:"
        partitions = {}
        for topic in {r[1] for r in rows}:
            known = self._partitions.get(topic)
            if known is None or time.monotonic() > known[0]:  # re-read now and then: partitions can be added
                known = self._partitions[topic] = (time.monotonic() + 60,
                                                   sorted(await self.producer.partitions_for(topic)))
            partitions[topic] = known[1]
        open_batches: dict[TopicPartition, list] = {}  # partition -> [builder, records in it]
        sent = []
        for row_id, topic, key, value in rows:
            key_bytes = key.encode() if key is not None else None
            tp = TopicPartition(topic, partition_of(key_bytes, partitions[topic]))
            batch = open_batches.get(tp)
            if batch is None:
                batch = open_batches[tp] = [self.producer.create_batch(), 0]
            record = dict(timestamp=None, key=key_bytes, value=value.encode(),
                          headers=[(HEADER, f"{prefix}{row_id}".encode())])
            if batch[0].append(**record) is None:  # full: send it, go on in a new one (a first record always fits)
                sent.append((tp, await self.producer.send_batch(batch[0], topic, partition=tp.partition), batch[1]))
                batch = open_batches[tp] = [self.producer.create_batch(), 0]
                batch[0].append(**record)
            batch[1] += 1
        for tp, (builder, count) in open_batches.items():
            sent.append((tp, await self.producer.send_batch(builder, tp.topic, partition=tp.partition), count))
        return sent

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
            except Exception:
                # Published but unmarked: kept in memory for the next try; a successor's `recover` finds them.
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

    def _pending(self, published: list[int]):
        """Up to a batch of unsent rows in id order, leaving out those `published` (not yet marked sent)."""
        with self.engine.connect() as conn:
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

    def _mark_sent(self, ids: list[int], positions: dict[TopicPartition, int], only_unsent: bool = False) -> None:
        """Mark rows sent and record how far each partition was published, in one transaction."""
        now = iso(self.clock())
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # fixed statements: no SQLAlchemy construct per marking
                with conn.connection.dbapi_connection.cursor() as cursor:
                    if ids:
                        cursor.execute("UPDATE outbox SET sent_at = %(now)s WHERE id = ANY(%(ids)b::bigint[])"
                                       + (" AND sent_at IS NULL" if only_unsent else ""), {"now": now, "ids": ids})
                    if positions:
                        cursor.execute(
                            'INSERT INTO relay_positions (topic, "partition", next_offset) '
                            "SELECT * FROM unnest(%(topics)s::VARCHAR[], %(partitions)s::INTEGER[], "
                            "%(offsets)s::BIGINT[]) "
                            'ON CONFLICT (topic, "partition") DO UPDATE SET next_offset = EXCLUDED.next_offset',
                            {"topics": [tp.topic for tp in positions], "partitions": [tp.partition for tp in positions],
                             "offsets": list(positions.values())})
                return
            for start in range(0, len(ids), 500):
                query = update(t.outbox).where(t.outbox.c.id.in_(ids[start:start + 500]))
                if only_unsent:
                    query = query.where(t.outbox.c.sent_at.is_(None))
                conn.execute(query.values(sent_at=now))
            if positions:
                stmt = insert_stmt(conn, t.relay_positions)
                conn.execute(stmt.on_conflict_do_update(index_elements=["topic", "partition"],
                                                        set_={"next_offset": stmt.excluded.next_offset}),
                             [{"topic": tp.topic, "partition": tp.partition, "next_offset": offset}
                              for tp, offset in positions.items()])

    def _prune(self) -> None:
        """Forget rows published more than ten minutes ago; Kafka has them now."""
        cutoff = iso(self.clock() - timedelta(minutes=10))
        with self.engine.begin() as conn:
            conn.execute(delete(t.outbox).where(t.outbox.c.sent_at.is_not(None), t.outbox.c.sent_at < cutoff))

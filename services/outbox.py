"""The outbox relay: publishes committed outputs to Kafka, in commit order, then marks them sent.

Only the holder of the `outbox-relay` lease publishes, so outputs of one alert keep their
order even with several processes. The producer is idempotent (no duplicates from its own
retries). A crash between publishing and marking would repeat the unmarked rows, so every
message carries a header `onevoice-outbox: <store id>:<row id>`, and the relay records, in the
transaction that marks rows sent, the offset it has published up to in each output partition.
Whoever takes the lease next reads the few messages after those offsets and marks the rows it
finds there as sent before publishing anything: no output is repeated, none is lost.

Bounded outputs: an output larger than its topic accepts (`max.message.bytes`, read from the
broker at each takeover) would be refused by the broker again and again and block every output
behind it. Such a row is set aside instead: marked `undeliverable` (and sent, so nothing waits
for it), counted (`undeliverable` in kam.ops and /metrics) and named in one log line. Should the
broker refuse a batch all the same (its limit lowered meanwhile), the relay learns the smaller
limit, sets a refused single output aside, replaces its producer (an idempotent producer cannot
go on in a partition after a refused batch) and takes over again as after a crash.

Outages of the database or the broker are reported to `services.outages.OUTAGES` (one line, a
reminder every 30 s, one line when back); the relay retries with backoff up to 10 s.
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
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError
from aiokafka.partitioner import murmur2
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from sqlalchemy import Engine, and_, delete, or_, select, update

from schemas.registry import RELAYED_TOPICS
from services import kafka_clients
from services.domain import iso
from services.domain import utcnow
from services.kafka_clients import KafkaTarget
from services.outages import DATABASE, KAFKA, OUTAGES, report_outage
from services.store import tables as t
from services.store.db import insert_stmt
from services.store.lease import hold_lease, release_lease
from services.store.state import add_to_counters

log = logging.getLogger("onevoice.outbox")
LEASE = "outbox-relay"
HEADER = "onevoice-outbox"
MARK_INTERVAL_S = 0.05
STORE_POLL_S = 0.25  # how often the lease holder looks for outputs that other processes committed
RETRY_S = 1.0  # first pause after a failed round (database or Kafka unreachable); doubles up to RETRY_MAX_S
RETRY_MAX_S = 10.0
RECENT_IDS = 100_000  # published ids remembered (at least those not yet marked sent)
#: Kafka's default `max.message.bytes` of a topic: the largest record batch it takes.
DEFAULT_MESSAGE_LIMIT = 1048588
BATCH_OVERHEAD = 61  # a record batch's header (DefaultRecordBatch.HEADER_STRUCT)
RECORD_OVERHEAD = 21  # a record's most framing beyond its key, value and headers (MAX_RECORD_OVERHEAD)
UNDELIVERABLE_KEPT = timedelta(days=30)  # set-aside rows stay in the outbox this long, for operators to look at
UNDELIVERABLE = "undeliverable"  # the ops counter


class OutputRefused(Exception):
    """The broker refused a batch as too large; handled (set aside or limit learned), the round starts over."""


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
    def __init__(self, engine: Engine, producer: AIOKafkaProducer, *, instance: str, bootstrap: KafkaTarget,
                 batch: int = 2000, lease_ttl_s: float = 10.0, clock: Callable[[], datetime] = utcnow,
                 producer_factory: Callable[[], AIOKafkaProducer] | None = None):
        self.engine = engine
        self.producer = producer
        # After the broker refused a batch, the producer is replaced by one from here (and stopped at the end).
        self.producer_factory = producer_factory
        self._own_producer: AIOKafkaProducer | None = None
        self.limits: dict[str, int] = {}  # topic -> largest record batch it takes (max.message.bytes)
        self.undeliverable = 0  # outputs this process set aside
        self._failures = 0
        self._last_unexpected: dict[str, float] = {}
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
                except Exception as exc:  # the database or Kafka gone for a moment: the relay must outlive it
                    self._failures += 1
                    pause = min(RETRY_S * 2 ** (self._failures - 1), RETRY_MAX_S)
                    if isinstance(exc, OutputRefused):
                        pause = 0.0  # handled: its line is written; start over at once
                    elif not report_outage(exc):
                        self._unexpected(exc, pause)
                    # Some outputs of the round may have reached Kafka unmarked: take the lease over
                    # again, as after a crash, so `recover` finds them there and they are not sent twice.
                    self._holding, self._lease_until = False, 0.0
                    await _pause(stop, pause)
                    continue
                self._failures = 0
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
                if self._own_producer is not None:
                    await self._own_producer.stop()

    def _unexpected(self, exc: Exception, pause: float) -> None:
        """A failure that is no outage (a bug, a refused request): with its traceback, once per 30 s per kind."""
        kind, now = type(exc).__name__, time.monotonic()
        if now - self._last_unexpected.get(kind, -1e9) >= 30:
            self._last_unexpected[kind] = now
            log.error("outbox relay round failed; trying again in %.0f s", pause, exc_info=exc)

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
        OUTAGES.recovered(DATABASE)
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

    # -- outputs too large for the broker -------------------------------------------------

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
        """Forget rows published more than ten minutes ago (Kafka has them now), and set-aside ones after 30 days."""
        cutoff = iso(self.clock() - timedelta(minutes=10))
        kept_until = iso(self.clock() - UNDELIVERABLE_KEPT)
        with self.engine.begin() as conn:
            c = t.outbox.c
            conn.execute(delete(t.outbox).where(c.sent_at.is_not(None), or_(
                and_(c.undeliverable.is_(None), c.sent_at < cutoff), c.sent_at < kept_until)))

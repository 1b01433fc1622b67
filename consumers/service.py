"""`onevoice run`: the consumer group member that feeds batches to the processor.

Per fetched batch: one database transaction (the processor), then the Kafka offset commit.
Beside it run the outbox relay, the escalation timer and the ops snapshots.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
import socket
import sys
import threading
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError, KafkaError

from consumers.ops import OpsReporter
from consumers.topics import ensure_topics
from services import kafka_clients
from services.outages import DATABASE, KAFKA, OUTAGES, install_calm_logging, report_outage, wait_for_dependencies
from schemas.registry import INPUT_TOPICS
from services.config import Settings
from services.outbox import OutboxRelay
from services.domain import utcnow
from services.inputs import InputRecord, decode_records
from services.processor import Processor
from services.store.errors import transient_database_error
from services.store.db import checkpoint_sqlite, create_tables, make_engine
from services.timers import EscalationTimer

log = logging.getLogger("onevoice.service")
MAX_FETCH_BYTES = 16 * 1024 * 1024
INLINE_DECODE_MAX = 50
# At moderate rates the broker answered a fetch for every message or two (1 byte is enough by
# default), and every fetch request and response lists all 36 input partitions, encoded and
# decoded in Python: 14 % of the service's CPU at 500 events/s. Waiting up to 5 ms for 16 KiB caps
# that at 200 fetches a second; the wait overlaps the batch being applied.
FETCH_MIN_BYTES = 16 * 1024
FETCH_MAX_WAIT_MS = 5


def tune_garbage_collector() -> None:
    """Collect cycles rarely: the caches hold hundreds of thousands of long-lived objects.

    With CPython's default thresholds a full collection ran every few batches and took ~100 ms
    (traversing every cached object): 20 % of the processing time, and the worst latencies.
    What the service allocates per batch is mostly freed by reference counting; cycles are
    still collected, just after 50,000 net allocations instead of 700, and full collections
    twenty times less often. Objects alive at start-up (modules, settings) are frozen out of it.
    """
    gc.freeze()
    gc.set_threshold(*gc_thresholds_for(BACKLOG_BATCH))


# CPython makes the thread holding the GIL hand it over every `switch interval` while another
# thread waits for it. Working off a backlog, the thread applying a batch (the pipeline's
# bottleneck) and the one decoding the next batch both want it, and at CPython's 5 ms the batch
# waited its turn again and again. At 50 ms the decoder gets the GIL mostly while the batch waits
# on PostgreSQL: 11 % more events/s end to end (bench/RESULTS.md, 2026-11-26). With live traffic
# (small batches) a reply from Kafka would wait for the event loop's turn up to the interval, so
# small batches keep the 5 ms: p99 latency at 500 events/s is unchanged.
BACKLOG_SWITCH_INTERVAL_S = 0.05
LIVE_SWITCH_INTERVAL_S = 0.005
BACKLOG_BATCH = 500  # events in one batch from which the consumer is working off a backlog


def switch_interval_for(batch_size: int) -> float:
    return BACKLOG_SWITCH_INTERVAL_S if batch_size >= BACKLOG_BATCH else LIVE_SWITCH_INTERVAL_S


# A young-generation collection costs about 1 µs per container object allocated since the last one
# and still alive (mostly the rows a batch holds). Working off a backlog, rare collections cost least
# in all (in process, 30,000 events: 5 collections, 99-161 ms, against 63 collections, 249-303 ms, at
# 10,000). With live traffic every pause is a latency: at 50,000 the service paused 55 ms (p50) and up
# to 104 ms every ten seconds at 500 events/s on SQLite; at 10,000, 10 ms (p50), at most 24.
BACKLOG_GC_YOUNG = 50_000
LIVE_GC_YOUNG = 10_000


def gc_thresholds_for(batch_size: int) -> tuple[int, int, int]:
    return (BACKLOG_GC_YOUNG if batch_size >= BACKLOG_BATCH else LIVE_GC_YOUNG), 20, 20


def new_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Service:
    """All of onevoice in one process; several processes with one group id share the work."""

    def __init__(self, settings: Settings, *, clock=utcnow, instance: str | None = None):
        self.settings = settings
        self.clock = clock
        self.instance = instance or new_instance_id()
        self.stop = asyncio.Event()
        self.engine = make_engine(settings.database_url, checkpoints_apart=True)
        self.processor = Processor(self.engine, settings, clock=clock, instance=self.instance)
        self.timer = EscalationTimer(self.engine, settings, clock=clock, instance=self.instance)
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.relay: OutboxRelay | None = None
        self.ready = asyncio.Event()
        self.input_wait_s = 0.0  # time the consumer loop waited for Kafka with nothing to apply
        self._uncommitted: dict = {}  # partition -> next offset, of applied batches not yet committed to Kafka
        self.committed_offsets: dict = {}  # partition -> offset this process last committed (for the ops lag)
        self.ops = OpsReporter(self)  # opens nothing until run(): its endpoints and lag probe start there

    async def run(self) -> None:
        if self.stop.is_set():  # asked to stop before it started: nothing to finish
            return
        tune_garbage_collector()
        await self.ops.open_endpoints()  # first: a busy metrics port is reported before anything else starts
        try:
            await self._run()
        finally:
            await self.ops.close()

    async def _run(self) -> None:
        if not await wait_for_dependencies(self.settings, self.engine, self.stop):
            return  # asked to stop while waiting
        await asyncio.to_thread(create_tables, self.engine)
        await ensure_topics(self.settings, self.settings.partitions)
        self.producer = self._new_producer()
        self.consumer = kafka_clients.consumer(
            self.settings, *INPUT_TOPICS, group_id=self.settings.group_id,
            enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_bytes=MAX_FETCH_BYTES,
            fetch_min_bytes=FETCH_MIN_BYTES, fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            max_partition_fetch_bytes=MAX_FETCH_BYTES // 4, client_id=self.instance,
            session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=max(300, self.settings.session_timeout_ms // 3))
        await self.producer.start()
        await self.consumer.start()
        self.relay = OutboxRelay(self.engine, self.producer, instance=self.instance, clock=self.clock,
                                 bootstrap=self.settings, lease_ttl_s=self.settings.relay_lease_s,
                                 producer_factory=self._new_producer)
        ops = self.ops
        ops.producer = self.producer
        ops.latency.watch(self.relay)
        tasks = [asyncio.create_task(self.relay.run(self.stop), name="outbox-relay"),
                 asyncio.create_task(self._escalate_forever(), name="escalation"),
                 asyncio.create_task(ops.run(self.stop), name="ops"),
                 asyncio.create_task(self._review_daily(), name="daily-review"),
                 asyncio.create_task(self._notice_kafka_back(), name="kafka-watch")]
        if self.engine.dialect.name == "sqlite":
            tasks.append(asyncio.create_task(self._checkpoint_forever(), name="sqlite-checkpoint"))
        log.info("onevoice %s consuming %s as group %s", self.instance, ", ".join(INPUT_TOPICS),
                 self.settings.group_id)
        self.ready.set()
        try:
            await self._consume()
        finally:
            self.stop.set()
            await self.consumer.stop()  # leave the group now, so a successor need not wait for a timeout
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.producer.stop()
            self.engine.dispose()

    async def _consume(self) -> None:
        committing: asyncio.Task | None = None
        interval_before = sys.getswitchinterval()
        # The next batch is fetched and decoded while this one is applied (decoding is pure, and the
        # transaction's thread spends some 40 % of its time waiting on the database). A batch fetched
        # but not applied when the service stops is simply not committed: it is delivered again.
        upcoming = asyncio.create_task(self._fetch())
        try:
            while not self.stop.is_set():
                if not upcoming.done():
                    waited = time.perf_counter()
                    fetched, records, decoded, received_at = await upcoming
                    self.input_wait_s += time.perf_counter() - waited
                else:
                    fetched, records, decoded, received_at = upcoming.result()
                self.ops.turned()
                if records and len(records) < self.settings.max_batch:
                    # What arrived while the previous batch was applied joins this one: fewer, fuller batches.
                    more, extra, extra_decoded, _ = await self._fetch(self.settings.max_batch - len(records), wait_ms=0)
                    for tp, messages in more.items():
                        fetched[tp] = fetched.get(tp, []) + messages
                    records, decoded = records + extra, decoded + extra_decoded
                upcoming = asyncio.create_task(self._fetch())
                sys.setswitchinterval(switch_interval_for(len(records)))  # nothing fetched: live too
                gc.set_threshold(*gc_thresholds_for(len(records)))
                if not records:
                    continue
                began = time.perf_counter()
                result = await self._apply(records, decoded)
                if result is None:
                    return
                self.ops.batch_applied(len(records), result, time.perf_counter() - began, received_at)
                self.relay.publish_committed(result.committed_outputs)
                # The batch is durable: its offsets are committed while the next batch is fetched and
                # applied, one commit at a time, each taking the newest offsets of every batch since.
                self._uncommitted.update({tp: messages[-1].offset + 1 for tp, messages in fetched.items() if messages})
                if committing is None or committing.done():
                    committing = asyncio.create_task(self._commit_uncommitted())
        finally:
            sys.setswitchinterval(interval_before)
            upcoming.cancel()
            await asyncio.gather(upcoming, return_exceptions=True)
            if committing is not None:
                await committing

    async def _fetch(self, max_records: int | None = None, wait_ms: int = 200):
        fetched = await self.consumer.getmany(timeout_ms=wait_ms, max_records=max_records or self.settings.max_batch)
        # aiokafka's records as they are: they have the five attributes of an InputRecord (copying them cost 2 µs each)
        records = [m for messages in fetched.values() for m in messages]
        if len(records) > INLINE_DECODE_MAX:
            decoded = await asyncio.to_thread(decode_records, records)
        else:  # a few events decode faster than a hand-over to a worker thread and back
            decoded = decode_records(records)
        return fetched, records, decoded, time.monotonic()

    async def _commit_uncommitted(self) -> None:
        while self._uncommitted:
            offsets, self._uncommitted = self._uncommitted, {}
            # Partitions handed to another member since (a rebalance while a batch was applied) are its
            # to commit; one of them in the request would make Kafka refuse the others too.
            assigned = self.consumer.assignment()
            await self._commit({tp: offset for tp, offset in offsets.items() if tp in assigned})

    async def _commit(self, offsets) -> None:
        if not offsets:
            return
        began = time.perf_counter()
        try:
            await self.consumer.commit(offsets)
            OUTAGES.recovered(KAFKA)
            self.committed_offsets.update(offsets)
            log.debug("offsets committed in %.1f ms", (time.perf_counter() - began) * 1000)
        except (CommitFailedError, KafkaError) as exc:
            # The partitions moved to another member; it will re-read them and skip what we applied.
            # (Or the broker is away: one outage line, and the next batch's commit carries these offsets too.)
            if not report_outage(exc):
                log.warning("offset commit failed (%s); redelivered events will be recognised as duplicates", exc)

    async def _apply(self, records: list[InputRecord], decoded):
        """Apply a batch, waiting out database outages; None when asked to stop meanwhile."""
        delay = 0.5
        paused: set = set()
        try:
            while True:
                try:
                    result = await asyncio.to_thread(self.processor.process, records, decoded)
                    OUTAGES.recovered(DATABASE)
                    return result
                except Exception as exc:
                    if not transient_database_error(exc):
                        raise
                    OUTAGES.failed(DATABASE, exc)  # one line per outage, a reminder every 30 s
                    self.ops.database_retry()
                    # Nothing can be applied until the database is back: stop asking Kafka for more. The
                    # fetcher's 5 ms polls of every input partition cost 10-13 % of a core over an outage.
                    if not paused:
                        paused = set(self.consumer.assignment())
                        self.consumer.pause(*paused)
                    if await self._stopped_within(delay):
                        return None
                    delay = min(delay * 2, 10.0)
        finally:
            if paused:
                self.consumer.resume(*(tp for tp in paused if tp in self.consumer.assignment()))

    async def _stopped_within(self, seconds: float) -> bool:
        """Wait `seconds` or until asked to stop; whether asked to stop."""
        try:
            await asyncio.wait_for(self.stop.wait(), seconds)
            return True
        except asyncio.TimeoutError:
            return False

    async def _escalate_forever(self) -> None:
        while not self.stop.is_set():
            try:
                escalated = await asyncio.to_thread(self.timer.escalate_due)
                OUTAGES.recovered(DATABASE)
                self.ops.escalated(escalated)
                if escalated:
                    self.relay.notify()
                    continue
            except Exception as exc:  # a database hiccup must not end the timers
                if not report_outage(exc):
                    log.exception("escalation round failed")
            # while the database is away, look less often
            await self._stopped_within(max(self.settings.timer_interval_s, 2.0 if OUTAGES.is_down(DATABASE) else 0.0))

    async def _review_daily(self) -> None:
        """Once per UTC day, judge again the key accounts with open conflicts: validity ends with the calendar."""
        reviewed_on = None
        while not self.stop.is_set():
            today = self.clock().date()
            if today != reviewed_on:
                try:
                    roots = await asyncio.to_thread(self.processor.key_accounts_with_open_conflicts)
                    for start in range(0, len(roots), 200):
                        if await asyncio.to_thread(self.processor.rejudge, roots[start:start + 200]):
                            self.relay.notify()
                    reviewed_on = today
                except Exception as exc:
                    if not report_outage(exc):
                        log.exception("daily review failed; will try again")
            await self._stopped_within(60)

    async def _checkpoint_forever(self) -> None:
        """SQLite: copy the write-ahead log into the database every second, beside the batches (`checkpoint_sqlite`)."""
        while not self.stop.is_set():
            try:
                await asyncio.to_thread(checkpoint_sqlite, self.engine)
            except Exception as exc:  # a busy or vanished file: the next round tries again
                if not report_outage(exc):
                    log.warning("SQLite checkpoint failed (%s); trying again", exc)
            await self._stopped_within(1.0)
        await asyncio.to_thread(checkpoint_sqlite, self.engine)  # leave a short log behind

    def _new_producer(self) -> AIOKafkaProducer:
        """The relay's producer (and its replacement after the broker refused a batch).

        No linger: the relay hands over whole record batches, all of a round before the producer's
        sender runs, so one request carries them anyway; a linger only held each round back (2 ms).
        """
        return kafka_clients.producer(self.settings, enable_idempotence=True, acks="all", linger_ms=0,
                                      max_request_size=2 * 1024 * 1024, max_batch_size=256 * 1024)

    async def _notice_kafka_back(self) -> None:
        """While Kafka is reported away, ask the broker for metadata every 2 s: the consumer's fetches
        do not fail when it is away (they come back empty), so the first answer is what says it is back."""
        while not self.stop.is_set():
            if OUTAGES.is_down(KAFKA) and self.producer is not None:
                try:
                    if await asyncio.wait_for(self.producer.client.force_metadata_update(), 10):
                        OUTAGES.recovered(KAFKA)
                except Exception:
                    pass
            await self._stopped_within(2.0)

    def request_stop(self) -> None:
        self.stop.set()


async def run_service(settings: Settings, stop_early: threading.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT, then finish the batch in hand, commit, and leave the group."""
    install_calm_logging(settings.secret_values())  # aiokafka's reconnection floods tamed, passwords blanked
    service = Service(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.request_stop)
    if stop_early is not None and stop_early.is_set():
        service.request_stop()
    await service.run()

"""The relay's loop: hold the `outbox-relay` lease, publish a round, retry after failures, sleep until woken.

`OutboxRelay` is one object made of the parts of this package (see its docstring): taking over
(`takeover.py`), publishing (`publishing.py`), marking (`marking.py`) and setting aside
(`oversized.py`); this module holds its state and drives them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime

from aiokafka import AIOKafkaProducer, TopicPartition
from sqlalchemy import Engine

from services.domain import utcnow
from services.kafka_clients import KafkaTarget
from services.outages import DATABASE, OUTAGES, report_outage
from services.outbox.marking import Marking
from services.outbox.oversized import OutputRefused, SetAside
from services.outbox.publishing import Publishing
from services.outbox.takeover import Takeover
from services.store.lease import hold_lease, release_lease

log = logging.getLogger("onevoice.outbox")
LEASE = "outbox-relay"
STORE_POLL_S = 0.25  # how often the lease holder looks for outputs that other processes committed
RETRY_S = 1.0  # first pause after a failed round (database or Kafka unreachable); doubles up to RETRY_MAX_S
RETRY_MAX_S = 10.0


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Wait `seconds` or until `stop`, whatever wakes the relay meanwhile (see `OutboxRelay._sleep`)."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class OutboxRelay(Takeover, Publishing, Marking, SetAside):
    """Publishes the outbox while this process holds the lease; `run` until `stop` is set."""

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
        self._lease_until = 0.0  # (loop time) when to renew the lease
        self._lease_expires = 0.0  # (loop time) no later than when the lease runs out unless renewed
        self._renewal: asyncio.Task | None = None
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
                    self._drop_renewal()
                    await _pause(stop, pause)
                    continue
                self._failures = 0
                if not published:
                    await self._sleep(stop, STORE_POLL_S)
            if self._holding:
                await self.publish_pending()  # drain what the last batch committed
        finally:
            self._drop_renewal()
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
        """Whether this process holds the relay lease, renewing it every third of its time to live.

        While the lease has more than a third of its time left, it is renewed in the background and
        publishing goes on: on SQLite the renewal waits for the store's one writer (a batch being
        applied, the marking), and waiting for it in line had held outputs back for half a second.
        """
        if self._renewal is not None and self._renewal.done():
            renewal, self._renewal = self._renewal, None
            held, asked_at = renewal.result()  # a failure goes where a failed round goes
            if held:
                self._lease_until, self._lease_expires = asked_at + self.lease_ttl_s / 3, asked_at + self.lease_ttl_s
            else:
                self._lease_until = self._lease_expires = 0.0  # (cannot happen while ours: it lapsed)
        now = loop.time()
        if now < self._lease_until:
            return True
        if self._holding and now < self._lease_expires - self.lease_ttl_s / 3:
            if self._renewal is None:
                self._renewal = asyncio.create_task(self._renew(loop), name="outbox-lease")
            return True
        if self._renewal is not None:
            renewal, self._renewal = self._renewal, None
            held, asked_at = await renewal
        else:
            held, asked_at = await self._renew(loop)
        if not held or not self._holding:
            self._committed.clear()  # the holder publishes them from the store; after a takeover, so do we
            self._read_store = True
        if held and not self._holding:
            await self.recover()
        self._holding = held
        if held:
            self._lease_until, self._lease_expires = asked_at + self.lease_ttl_s / 3, asked_at + self.lease_ttl_s
        return held

    async def _renew(self, loop) -> tuple[bool, float]:
        """Take or renew the lease: (held, the loop time it was asked at, from which its time to live counts)."""
        asked_at = loop.time()
        held = await asyncio.to_thread(hold_lease, self.engine, LEASE, self.instance, self.clock(), self.lease_ttl_s)
        OUTAGES.recovered(DATABASE)
        return held, asked_at

    def _drop_renewal(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            self._renewal = None

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        waiters = [asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(stop.wait())]
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()

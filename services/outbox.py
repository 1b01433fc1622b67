"""The outbox relay: publishes committed outputs to Kafka, in commit order, then marks them sent.

Only the holder of the `outbox-relay` lease publishes, so outputs of one alert keep their
order even with several processes. The producer is idempotent (no duplicates from its own
retries); a crash between publishing and marking can still repeat the last unmarked rows,
which consumers recognise by `alert_id` + `status` / `instruction_id`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from aiokafka import AIOKafkaProducer
from sqlalchemy import Engine, delete, select, update

from services.domain import iso
from services.processor import utcnow
from services.store import tables as t
from services.store.lease import hold_lease, release_lease

log = logging.getLogger("onevoice.outbox")
LEASE = "outbox-relay"


class OutboxRelay:
    def __init__(self, engine: Engine, producer: AIOKafkaProducer, *, instance: str, batch: int = 2000,
                 lease_ttl_s: float = 10.0, clock: Callable[[], datetime] = utcnow):
        self.engine = engine
        self.producer = producer
        self.instance = instance
        self.batch = batch
        self.lease_ttl_s = lease_ttl_s
        self.clock = clock
        self.wake = asyncio.Event()
        self.sent = 0
        self._lease_until = 0.0

    def notify(self) -> None:
        """Something was committed to the outbox: publish it now rather than at the next poll."""
        self.wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        last_prune = loop.time()
        try:
            while not stop.is_set():
                if not await self._hold(loop):
                    await self._sleep(stop, 1.0)
                    continue
                self.wake.clear()  # before reading, so a commit that lands meanwhile wakes the next round
                published = await self.publish_pending()
                if loop.time() - last_prune > 60:
                    await asyncio.to_thread(self._prune)
                    last_prune = loop.time()
                if not published:
                    await self._sleep(stop, 0.25)
            await self.publish_pending()  # drain what the last batch committed
        finally:
            await asyncio.to_thread(release_lease, self.engine, LEASE, self.instance)

    async def _hold(self, loop) -> bool:
        if loop.time() < self._lease_until:
            return True
        if await asyncio.to_thread(hold_lease, self.engine, LEASE, self.instance, self.clock(), self.lease_ttl_s):
            self._lease_until = loop.time() + self.lease_ttl_s / 3
            return True
        return False

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        waiters = [asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(stop.wait())]
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()

    async def publish_pending(self) -> int:
        """Publish one batch of unsent rows in id order; returns how many were published."""
        began = time.perf_counter()
        rows = await asyncio.to_thread(self._pending)
        if not rows:
            return 0
        read = time.perf_counter()
        futures = [await self.producer.send(r.topic, r.value.encode(), key=r.key.encode() if r.key is not None else None)
                   for r in rows]
        await asyncio.gather(*futures)
        acked = time.perf_counter()
        await asyncio.to_thread(self._mark_sent, [r.id for r in rows])
        log.debug("published %d outputs: read %.1f ms, sent %.1f ms, marked %.1f ms", len(rows),
                  (read - began) * 1000, (acked - read) * 1000, (time.perf_counter() - acked) * 1000)
        self.sent += len(rows)
        return len(rows)

    def _pending(self):
        with self.engine.connect() as conn:
            return conn.execute(select(t.outbox.c.id, t.outbox.c.topic, t.outbox.c.key, t.outbox.c.value)
                                .where(t.outbox.c.sent_at.is_(None)).order_by(t.outbox.c.id).limit(self.batch)).all()

    def _mark_sent(self, ids: list[int]) -> None:
        now = iso(self.clock())
        with self.engine.begin() as conn:
            for start in range(0, len(ids), 1000):
                conn.execute(update(t.outbox).where(t.outbox.c.id.in_(ids[start:start + 1000])).values(sent_at=now))

    def _prune(self) -> None:
        """Forget rows published more than ten minutes ago; Kafka has them now."""
        cutoff = iso(self.clock() - timedelta(minutes=10))
        with self.engine.begin() as conn:
            conn.execute(delete(t.outbox).where(t.outbox.c.sent_at.is_not(None), t.outbox.c.sent_at < cutoff))

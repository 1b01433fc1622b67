"""Health of the service for operations: `kam.ops` snapshots and Prometheus metrics."""

from __future__ import annotations

import asyncio
import json
import logging

from prometheus_client import Gauge, start_http_server
from sqlalchemy import func, select

from schemas.outputs import OpsSnapshot
from services.domain import CLOSED_STATUSES, iso
from services.store import tables as t

log = logging.getLogger("onevoice.ops")
COUNTERS = ("processed", "duplicates", "stale", "dead_letters", "escalations", "unknown_accounts")
GAUGES = {name: Gauge(f"onevoice_{name}", f"onevoice {name.replace('_', ' ')} (all instances)")
          for name in (*COUNTERS, "open_alerts", "consumer_lag", "outbox_pending")}


def read_snapshot(engine) -> dict:
    """Totals across all instances sharing the database, plus open alerts and unsent outputs."""
    with engine.connect() as conn:
        totals = dict(conn.execute(select(t.counters.c.name, func.sum(t.counters.c.value))
                                   .group_by(t.counters.c.name)).all())
        open_alerts = conn.execute(select(func.count()).select_from(t.alerts)
                                   .where(t.alerts.c.status.not_in(list(CLOSED_STATUSES)))).scalar()
        pending = conn.execute(select(func.count()).select_from(t.outbox).where(t.outbox.c.sent_at.is_(None))).scalar()
    snapshot = {name: int(totals.get(name) or 0) for name in COUNTERS}
    snapshot.update(open_alerts=int(open_alerts), outbox_pending=int(pending))
    return snapshot


class OpsReporter:
    def __init__(self, service, producer):
        self.service = service
        self.producer = producer
        self._assignment: frozenset | None = None
        if service.settings.metrics_port:
            start_http_server(service.settings.metrics_port)

    async def consumer_lag(self) -> int:
        """Messages after the committed offsets of this process's partitions.

        Within one assignment only this process commits its partitions, so what it committed or
        fetched once is known without asking the coordinator again (one request per partition,
        36 of them every snapshot, before).
        """
        consumer = self.service.consumer
        known = getattr(self.service, "committed_offsets", {})
        assignment = frozenset(consumer.assignment())
        if assignment != self._assignment:  # after a rebalance another member may have committed meanwhile
            known.clear()
            self._assignment = assignment
        lag = 0
        for tp in assignment:
            high = consumer.highwater(tp)
            if high is None:
                continue
            committed = known.get(tp)
            if committed is None:
                committed = await consumer.committed(tp)
                if committed is not None:  # only the owner commits: it holds until this process commits
                    known[tp] = committed
            lag += max(0, high - (committed or 0))
        return lag

    async def run(self, stop: asyncio.Event) -> None:
        interval = self.service.settings.ops_interval_s
        while not stop.is_set():
            try:
                await self.publish()
            except Exception:
                log.exception("ops snapshot failed")
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except asyncio.TimeoutError:
                pass

    async def publish(self) -> dict:
        snapshot = await asyncio.to_thread(read_snapshot, self.service.engine)
        snapshot["consumer_lag"] = await self.consumer_lag()
        snapshot.update(at=iso(self.service.clock()), instance=self.service.instance)
        snapshot = OpsSnapshot.model_validate(snapshot).model_dump(mode="json")
        for name, gauge in GAUGES.items():
            gauge.set(snapshot.get(name, 0))
        await self.producer.send("kam.ops", json.dumps(snapshot).encode(), key=self.service.instance.encode())
        return snapshot

"""Health of the service for operations: `kam.ops` snapshots, Prometheus metrics, /readyz, batch log lines.

`OpsReporter` is the one object the service loop talks to about operations: it opens the
endpoints, is told of every applied batch and escalation, and every `ops_interval_s` reads
the store and the group's lag into the gauges and publishes a `kam.ops` snapshot.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from sqlalchemy import func, select

from schemas.outputs import OpsSnapshot
from services.domain import CLOSED_STATUSES, iso
from services.kafka_clients import client_options
from services.observability import metrics as m
from services.observability.batch_summary import summarise_outputs
from services.observability.health import HealthServer
from services.observability.lag import LagProbe
from services.observability.latency import PublishLatency
from services.observability.store_probe import read_store_health, record_instance, store_reachable
from services.store import tables as t

log = logging.getLogger("onevoice.ops")
batch_log = logging.getLogger("onevoice.batch")
alert_log = logging.getLogger("onevoice.alerts")
COUNTERS = ("processed", "duplicates", "stale", "dead_letters", "escalations", "unknown_accounts", "undeliverable")
CHECK_TIMEOUT_S = 2.5  # each readiness check; /readyz must turn within 5 s of an outage


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
    def __init__(self, service, producer=None):
        self.service = service
        self.producer = producer
        self.latency = PublishLatency()
        self.last_activity = time.monotonic()  # the consumer loop's last turn
        self.last_batch: dict | None = None
        # the lag probe connects as the service's own clients do (security settings included)
        self._lag = LagProbe(client_options(service.settings), service.settings.group_id)
        self._server: HealthServer | None = None

    # -- endpoints --------------------------------------------------------------------------

    async def open_endpoints(self) -> None:
        """Listen for /metrics, /healthz, /readyz (when ONEVOICE_METRICS_PORT is set): first of all, so a
        busy port is reported before anything else starts."""
        settings = self.service.settings
        if settings.metrics_port and self._server is None:
            self._server = HealthServer(settings.metrics_host, settings.metrics_port, self.readiness_problems)
            await self._server.start()

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()
        await self._lag.close()

    async def readiness_problems(self) -> list[str]:
        """Why this process should not get traffic now; empty when it is ready."""
        service = self.service
        if service.consumer is None or not service.ready.is_set():
            return ["starting"]
        problems = []
        store, broker = await asyncio.gather(self._check(asyncio.to_thread(store_reachable, service.engine)),
                                             self._check(service.producer.client.fetch_all_metadata()))
        if store:
            problems.append(f"store unreachable: {store}")
        if broker:
            problems.append(f"broker unreachable: {broker}")
        if not service.consumer.assignment():
            problems.append("no input partitions assigned to this process")
        idle = time.monotonic() - self.last_activity
        if idle > service.settings.stall_after_s:
            problems.append(f"consumer stalled: no progress for {idle:.0f} s")
        return problems

    @staticmethod
    async def _check(awaitable) -> str | None:
        try:
            await asyncio.wait_for(awaitable, CHECK_TIMEOUT_S)
        except asyncio.TimeoutError:
            return f"no answer within {CHECK_TIMEOUT_S} s"
        except Exception as exc:  # the reason goes to the probe's caller; no URL, so no password
            return exc.__class__.__name__
        return None

    # -- what the service loop reports --------------------------------------------------------

    def turned(self) -> None:
        """The consumer loop went round once (fetched, with or without events)."""
        self.last_activity = time.monotonic()

    def batch_applied(self, events: int, result, seconds: float, received_at: float) -> None:
        """Count, log and time one applied batch (its outputs are committed, not yet published)."""
        self.last_activity = time.monotonic()
        rows = result.committed_outputs
        outputs = summarise_outputs(rows, keep_changes=alert_log.isEnabledFor(logging.DEBUG))
        counts = result.counters()
        m.record_batch(counts, outputs, events, seconds, time.time())
        conflicts = result.retries  # deadlocks/serialization failures the processor retried
        if conflicts:
            m.DATABASE_RETRIES.labels("conflict").inc(conflicts)
        self.latency.committed(rows, received_at)
        fields = {"events": events, "processed": counts.get("processed", 0),
                  "duplicates": counts.get("duplicates", 0), "stale": counts.get("stale", 0),
                  "alerts_opened": outputs.opened, "alerts_resolved": outputs.resolved,
                  "alerts_escalated": outputs.escalated, "instructions": sum(outputs.instructions.values()),
                  "notices": outputs.notices, "dead_letters": counts.get("dead_letters", 0),
                  "duration_ms": round(seconds * 1000, 1)}
        self.last_batch = {**fields, "at": iso(self.service.clock())}
        batch_log.info("batch: %(events)d events (%(processed)d applied, %(duplicates)d duplicates, %(stale)d stale), "
                       "alerts %(alerts_opened)d opened / %(alerts_resolved)d resolved / %(alerts_escalated)d "
                       "escalated, %(instructions)d instructions, %(notices)d notices, %(dead_letters)d dead "
                       "letters, %(duration_ms).1f ms", fields, extra={"fields": fields})
        for alert in outputs.alert_changes:
            change = {key: alert.get(key) for key in ("alert_id", "rule", "status", "severity", "key_account_id",
                                                      "assignee", "caused_by")}
            alert_log.debug("alert %(alert_id)s %(rule)s is %(status)s (%(severity)s, key account "
                            "%(key_account_id)s, assignee %(assignee)s, caused by %(caused_by)s)", change,
                            extra={"fields": change})

    def database_retry(self, reason: str = "unavailable") -> None:
        m.DATABASE_RETRIES.labels(reason).inc()

    def escalated(self, count: int) -> None:
        if count:
            m.ESCALATIONS.inc(count)
            log.info("escalated %d alerts", count, extra={"fields": {"escalated": count}})

    # -- the periodic snapshot ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        interval = self.service.settings.ops_interval_s
        while not stop.is_set():
            try:
                await self.publish()
            except Exception as exc:
                from services.outages import report_outage

                if not report_outage(exc):  # the database or the broker away: the process's one outage line says it
                    log.warning("ops snapshot failed; will try again in %.0f s", interval,
                                exc_info=log.isEnabledFor(logging.DEBUG))
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except asyncio.TimeoutError:
                pass

    async def consumer_lag(self) -> int | None:
        """Group lag (log end minus committed) per input partition into the gauges; returns the sum over the
        partitions assigned to this process (what its kam.ops snapshot reports), None if unknown."""
        try:
            lag = await self._lag.measure()
        except Exception as exc:
            log.debug("consumer lag unknown: %r", exc)
            return None
        m.record_lag(lag)
        assigned = self.service.consumer.assignment() if self.service.consumer else set()
        return sum(lag.get((tp.topic, tp.partition), 0) for tp in assigned)

    async def publish(self) -> dict:
        service = self.service
        m.READY.set(0 if await self.readiness_problems() else 1)  # for Prometheus, also when no probe asks
        health = await asyncio.to_thread(read_store_health, service.engine, service.clock())
        m.OPEN_ALERTS.set(health.open_alerts)
        m.ESCALATED_OPEN.set(health.escalated_open)
        m.ESCALATIONS_DUE.set(health.escalations_due)
        m.OUTBOX_PENDING.set(health.outbox_pending)
        m.OUTBOX_OLDEST_AGE.set(health.outbox_oldest_age_s)
        snapshot = await asyncio.to_thread(read_snapshot, service.engine)
        snapshot["consumer_lag"] = await self.consumer_lag()
        snapshot.update(at=iso(service.clock()), instance=service.instance)
        snapshot = OpsSnapshot.model_validate(snapshot).model_dump(mode="json")
        report = {"last_batch": self.last_batch, "consumer_lag": snapshot["consumer_lag"],
                  "assigned_partitions": len(service.consumer.assignment()) if service.consumer else 0}
        await asyncio.to_thread(record_instance, service.engine, service.instance, report, service.clock())
        if self.producer is not None:
            await self.producer.send("kam.ops", json.dumps(snapshot).encode(), key=service.instance.encode())
        return snapshot

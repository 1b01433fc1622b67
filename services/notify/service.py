"""`onevoice notify`: consume kam.alerts and kam.notices, record notifications, send them, remind, digest.

    kam.alerts / kam.notices ──► consumer (own group) ──► delivery log rows (one DB transaction per batch)
                                        │ then commit Kafka offsets: a crash before that re-reads the batch,
                                        │ and the rows' unique key makes the second recording a no-op
    delivery log ──► senders (claim with a lease → SMTP / webhook → mark sent, or retry with backoff)
    scheduler ──► reminders (halfway to due_at) and daily digests, recorded as rows like any other

Several processes share the work: Kafka splits the partitions, the lease splits the rows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timezone

from sqlalchemy import Engine

from services.config import Settings
from services.notify import metrics, policy
from services.notify.deliveries import DeliveryLog, key_account_names, load_people
from services.notify.render import (Person, card_heading, email_message, alert_link, render_alert, render_digest,
                                    render_notice, slack_payload, teams_payload)
from services.notify.smtp import PermanentFailure, SmtpSender, TemporaryFailure, parse_smtp_url
from services.notify.webhooks import WebhookSender
from services.store.db import create_tables, make_engine

log = logging.getLogger("onevoice.notify")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Notifier:
    def __init__(self, settings: Settings, *, engine: Engine | None = None, clock: Callable[[], datetime] = utcnow,
                 instance: str | None = None):
        self.settings = settings
        self.engine = engine or make_engine(settings.database_url)
        self.clock = clock
        self.instance = instance or f"notify-{uuid.uuid4().hex[:12]}"
        self.webhooks = {h.key: h for h in policy.parse_webhooks(settings.notify_webhooks)}
        self.log = DeliveryLog(self.engine, webhooks=list(self.webhooks.values()),
                               default_language=settings.notify_language)
        self.smtp_target = parse_smtp_url(settings.smtp_url)
        self.stopping = asyncio.Event()
        self.work = asyncio.Event()
        self._told_no_address: set[str] = set()

    # -- the process -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        await asyncio.to_thread(create_tables, self.engine)
        if self.settings.notify_metrics_port:
            from prometheus_client import start_http_server
            start_http_server(self.settings.notify_metrics_port, addr=getattr(self.settings, "metrics_host", "0.0.0.0"))
        log.info("notify %s: SMTP %s, %d webhook channel(s), digest at %02d:00 %s", self.instance,
                 self.smtp_target.safe, len(self.webhooks), self.settings.notify_digest_hour,
                 self.settings.notify_time_zone)
        tasks = [asyncio.create_task(self._consume(), name="consume"),
                 asyncio.create_task(self._schedule(), name="schedule")]
        tasks += [asyncio.create_task(self._send_forever(n), name=f"send-{n}")
                  for n in range(self.settings.notify_workers)]
        stop_waiter = asyncio.create_task(self.stopping.wait())
        try:
            done, _ = await asyncio.wait([stop_waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            broken = [task for task in done if task is not stop_waiter and not self.stopping.is_set()]
            if broken:  # a part died (e.g. Kafka unreachable at start): stop the whole process, visibly
                raise RuntimeError(f"notify {broken[0].get_name()} stopped: {broken[0].exception()!r}")
        finally:
            stop_waiter.cancel()
            self.stopping.set()
            self.work.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for task, result in zip(tasks, results):
                if isinstance(result, Exception):
                    log.error("%s ended with %r", task.get_name(), result)
            released = await asyncio.to_thread(self.log.release, self.instance)
            log.info("notify %s stopped (%d claimed notifications handed back)", self.instance, released)

    def request_stop(self) -> None:
        self.stopping.set()
        self.work.set()

    # -- consuming -------------------------------------------------------------------------------------------

    async def _consume(self) -> None:
        from services import kafka_clients

        topics = (self.settings.notify_alerts_topic, self.settings.notify_notices_topic)
        consumer = kafka_clients.consumer(self.settings, *topics, group_id=self.settings.notify_group_id,
                                          enable_auto_commit=False, auto_offset_reset="earliest",
                                          session_timeout_ms=self.settings.session_timeout_ms,
                                          heartbeat_interval_ms=max(1000, self.settings.session_timeout_ms // 5),
                                          max_poll_records=500)
        await consumer.start()
        log.info("notify %s consuming %s in group %s", self.instance, ", ".join(topics), self.settings.notify_group_id)
        try:
            while not self.stopping.is_set():
                batches = await consumer.getmany(timeout_ms=300, max_records=500)
                if not batches:
                    continue
                alerts, notices, offsets = [], [], {}
                for tp, records in batches.items():
                    for record in records:
                        message = self._read(record)
                        if message is not None:
                            (alerts if tp.topic == self.settings.notify_alerts_topic else notices).append(message)
                    offsets[tp] = records[-1].offset + 1
                recorded = await self._record_durably(alerts, notices)
                await consumer.commit(offsets)  # only now: the notifications are in the store
                log.info("recorded %d alert and %d notice messages: %d to send, %d for the digest, %d without address",
                         len(alerts), len(notices), recorded.pending, recorded.held, len(recorded.no_address))
                self.work.set()
        finally:
            await consumer.stop()

    def _read(self, record) -> dict | None:
        try:
            message = json.loads(record.value)
            if not isinstance(message, dict):
                raise ValueError("not an object")
            needed = ("alert_id", "status", "severity", "assignee", "key_account_id", "title", "updated_at") \
                if record.topic == self.settings.notify_alerts_topic else ("notice_id", "key_account_id", "title")
            missing = [k for k in needed if not message.get(k)]
            if missing:
                raise ValueError(f"missing {', '.join(missing)}")
            message.setdefault("detail", "")
            return message
        except (ValueError, TypeError) as exc:
            metrics.UNREADABLE.inc()
            log.error("skipping unreadable message %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc)
            return None

    async def _record_durably(self, alerts: list[dict], notices: list[dict]) -> None:
        """Record until it works: the offsets must not move on before the notifications are in the store."""
        delay = 0.5
        while True:
            try:
                recorded = await asyncio.to_thread(self.log.record, alerts, notices, self.clock())
                break
            except Exception as exc:  # noqa: BLE001 - the database away: wait, the batch is not committed
                if self.stopping.is_set():
                    raise
                log.warning("recording %d notifications failed (%s); retrying in %.1fs",
                            len(alerts) + len(notices), type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
        self._count(recorded)
        return recorded

    def _count(self, recorded) -> None:
        metrics.RECORDED.labels("pending").inc(recorded.pending)
        metrics.RECORDED.labels("held").inc(recorded.held)
        if recorded.no_address:
            metrics.RECORDED.labels("no_address").inc(len(recorded.no_address))
            metrics.NO_ADDRESS.inc(len(recorded.no_address))
            for person, subject in recorded.no_address:
                if person not in self._told_no_address:
                    self._told_no_address.add(person)
                    log.warning("no e-mail address for %s: notifications to them are recorded as no_address "
                                "(first: %s); set one with `onevoice notify prefs set %s --email …`",
                                person, subject, person)

    # -- reminders and digests -------------------------------------------------------------------------------

    async def _schedule(self) -> None:
        while not self.stopping.is_set():
            try:
                await self.schedule_once()
            except Exception as exc:  # noqa: BLE001 - retried on the next round
                log.warning("scheduling reminders/digests failed: %s", type(exc).__name__)
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=1.0)
            except TimeoutError:
                pass

    async def schedule_once(self) -> None:
        now = self.clock()
        reminders = await asyncio.to_thread(self.log.record_due_reminders, now)
        if reminders.pending or reminders.held or reminders.no_address:
            log.info("recorded %d reminders", reminders.pending + reminders.held + len(reminders.no_address))
            self._count(reminders)
            self.work.set()
        s = self.settings
        day = policy.digest_date_due(now, s.notify_digest_hour, s.notify_time_zone)
        period = policy.digest_period(day, s.notify_digest_hour, s.notify_time_zone)
        if (now - policy._instant(period[1])).total_seconds() > 12 * 3600:
            return  # more than 12 h late (the service was down): that day's digest is skipped, not sent at noon
        scheduled = await asyncio.to_thread(self.log.schedule_digests, day.isoformat(), period, now)
        if scheduled is not None:
            log.info("digest of %s scheduled for %d people", day.isoformat(), scheduled.pending + len(scheduled.no_address))
            self._count(scheduled)
            self.work.set()
        counts = await asyncio.to_thread(self.log.counts)
        for state in ("pending", "sent", "failed", "held", "no_address"):
            metrics.BACKLOG.labels(state).set(counts.get(state, 0))

    # -- sending ---------------------------------------------------------------------------------------------

    async def _send_forever(self, worker: int) -> None:
        smtp = SmtpSender(self.smtp_target)
        hooks = WebhookSender()
        try:
            while not self.stopping.is_set():
                try:
                    sent = await self.send_round(smtp, hooks)
                except Exception as exc:  # noqa: BLE001 - database away: try again shortly
                    log.warning("send round failed: %s", type(exc).__name__)
                    sent = 0
                    await asyncio.sleep(1)
                if not sent:
                    self.work.clear()
                    try:
                        await asyncio.wait_for(self.work.wait(), timeout=0.5)
                    except TimeoutError:
                        pass
        finally:
            await smtp.close()
            await hooks.close()

    async def send_round(self, smtp: SmtpSender, hooks: WebhookSender, limit: int = 20) -> int:
        """Claim up to `limit` due notifications and send them one by one; returns how many were handled."""
        s = self.settings
        rows, taken_over = await asyncio.to_thread(self.log.claim, self.instance, self.clock(), s.notify_lease_s, limit)
        if not rows:
            return 0
        if taken_over:
            metrics.TAKEN_OVER.inc(taken_over)
            log.warning("took over %d notifications from a process that stopped without finishing them; the one "
                        "it was sending may arrive twice (same Message-ID)", taken_over)
        people, names = await asyncio.to_thread(self._context_for, rows)
        for row in rows:
            if self.stopping.is_set():
                break  # the rest is handed back by release()
            try:
                await self._deliver(row, people, names, smtp, hooks)
            except (TemporaryFailure, PermanentFailure) as exc:
                permanent = isinstance(exc, PermanentFailure)
                state = await asyncio.to_thread(
                    self.log.mark_failed_attempt, row, self.instance, self.clock(), str(exc),
                    max_attempts=1 if permanent else s.notify_max_attempts, base_s=s.notify_retry_base_s,
                    max_s=s.notify_retry_max_s)
                if state == "failed":
                    metrics.FAILED.labels(row.channel).inc()
                    log.error("gave up %s %s/%s to %s via %s after %d attempt(s): %s", row.kind, row.subject_id,
                              row.status, row.recipient, row.channel, row.attempts, exc)
                else:
                    metrics.RETRIED.labels(row.channel).inc()
                    log.warning("%s %s/%s to %s via %s failed (attempt %d): %s; will retry", row.kind,
                                row.subject_id, row.status, row.recipient, row.channel, row.attempts, exc)
                continue
            if await asyncio.to_thread(self.log.mark_sent, row.id, self.instance, self.clock()):
                metrics.SENT.labels(row.channel).inc()
            else:
                log.warning("lease on %s/%s to %s lapsed while sending: another process may send it too",
                            row.subject_id, row.status, row.recipient)
        return len(rows)

    def _context_for(self, rows) -> tuple[dict[str, Person], dict[str, str]]:
        with self.engine.connect() as conn:
            people = load_people(conn, [r.recipient for r in rows if r.channel == "email"], self.settings.notify_language)
            names = key_account_names(conn, [r.key_account_id for r in rows if r.key_account_id])
        return people, names

    async def _deliver(self, row, people: dict[str, Person], names: dict[str, str], smtp: SmtpSender,
                       hooks: WebhookSender) -> None:
        s = self.settings
        item = json.loads(row.payload)
        if row.channel == "email":
            person = people[row.recipient]
            if row.kind == "digest":
                message = await asyncio.to_thread(self._digest_mail, person, item, row)
            else:
                message = self._mail(row, item, person, names)
            await smtp.send(message)
            return
        hook = self.webhooks.get(row.recipient.removeprefix("webhook:"))
        if hook is None:
            raise PermanentFailure("webhook channel no longer configured")
        name = names.get(row.key_account_id or "", row.key_account_id or "")
        link = alert_link(s.web_base_url, item["alert_id"]) if row.kind != "notice" \
            else f"{s.web_base_url.rstrip('/')}/notices/{item['notice_id']}"
        heading = card_heading(item, row.kind)
        payload = (slack_payload if hook.kind == "slack" else teams_payload)(item, name, link, heading=heading)
        await hooks.post(hook.url, payload)

    def _mail(self, row, item: dict, person: Person, names: dict[str, str]):
        s = self.settings
        name = names.get(row.key_account_id or "", row.key_account_id or "")
        if row.kind == "notice":
            mail = render_notice(item, person, key_account_name=name, base_url=s.web_base_url)
            headers = {"X-Onevoice-Notice-Id": item["notice_id"]}
            return email_message(mail, sender=s.smtp_from, person=person, subject_id=row.subject_id,
                                 status=row.status, headers=headers)
        reminder = row.kind == "reminder"
        mail = render_alert(item, person, key_account_name=name, base_url=s.web_base_url, tz=s.notify_time_zone,
                            reminder=reminder)
        headers = {"X-Onevoice-Alert-Id": item["alert_id"], "X-Onevoice-Alert-Status": item["status"]}
        if reminder:
            headers["X-Onevoice-Reminder"] = "halfway"
        return email_message(mail, sender=s.smtp_from, person=person, subject_id=row.subject_id, status=row.status,
                             headers=headers, thread_of=row.subject_id if reminder or item["status"] != "open" else None)

    def _digest_mail(self, person: Person, period: dict, row):
        s = self.settings
        with self.engine.connect() as conn:
            content = self.log.digest_content(conn, person.person_id, period["since"], period["until"])
            ids = {a["key_account_id"] for group in (content.open_alerts, content.new, content.escalated,
                                                     content.resolved, content.notices) for a in group}
            names = key_account_names(conn, ids)
        mail = render_digest(person, period["day"], (period["since"], period["until"]), content,
                             key_account_names=names, base_url=s.web_base_url, tz=s.notify_time_zone)
        return email_message(mail, sender=s.smtp_from, person=person, subject_id=row.subject_id, status="digest",
                             headers={"X-Onevoice-Digest": period["day"]})


async def run_notifier(settings: Settings, stop_signals: bool = True) -> None:
    import signal

    notifier = Notifier(settings)
    from services.redact import install_secrets_filter

    # belt and braces: nothing here logs them, but a library's error text might echo a URL
    install_secrets_filter([h.url for h in notifier.webhooks.values()] + [notifier.smtp_target.password or ""])
    if stop_signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, notifier.request_stop)
    await notifier.run()

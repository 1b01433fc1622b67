"""The delivery log in the store: recording notifications once, claiming them to send, marking the outcome.

Every statement here is plain SQLAlchemy Core that runs on SQLite and PostgreSQL. Uniqueness of
(subject, status, recipient, channel) is what makes a notification exist once, whichever process
or restart records it; a lease on claimed rows is what lets another process finish the work of
one that died.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, or_, select, update
from sqlalchemy.engine import Connection

from services.notify import policy
from services.notify.policy import Delivery, Preference, Webhook, iso
from services.notify.render import Person
from services.notify.tables import notify_alerts, notify_deliveries, notify_preferences
from services.store import tables as t
from services.store.db import insert_stmt

DIGEST_MARKER = "*"  # recipient of the row that says "this day's digests are scheduled"


@dataclass
class Recorded:
    """What a batch of messages added to the log (rows already there are not counted again)."""

    pending: int = 0
    held: int = 0
    no_address: list[tuple[str, str]] = field(default_factory=list)  # (person, subject)


def version_key(alert: dict) -> str:
    """Sortable text: the alert's updated_at at fixed width, then the status rank (a tie goes to the later status)."""
    return f"{policy.iso(policy._instant(alert['updated_at']))}:{policy.STATUS_RANK.get(alert['status'], 0)}"


def load_preferences(conn: Connection, people: Iterable[str]) -> dict[str, Preference]:
    people = sorted(set(people))
    prefs = {}
    for chunk in _chunks(people, 500):
        for row in conn.execute(select(notify_preferences).where(notify_preferences.c.person_id.in_(chunk))):
            prefs[row.person_id] = preference_of(row)
    return prefs


def preference_of(row) -> Preference:
    return Preference(channels=tuple(json.loads(row.channels)), severities=tuple(json.loads(row.severities)),
                      notices=bool(row.notices), digest=bool(row.digest), language=row.language, email=row.email)


def load_people(conn: Connection, people: Iterable[str], default_language: str) -> dict[str, Person]:
    """Name and address of each person from the key-account teams, a preference's address winning."""
    people = sorted(set(people))
    found: dict[str, Person] = {}
    prefs = load_preferences(conn, people)
    for chunk in _chunks(people, 500):
        rows = conn.execute(select(t.team_members.c.person_id, t.team_members.c.name, t.team_members.c.email)
                            .where(t.team_members.c.person_id.in_(chunk), t.team_members.c.present.is_(True))
                            .order_by(t.team_members.c.event_time))
        for row in rows:  # the newest assignment that names an address wins
            old = found.get(row.person_id)
            found[row.person_id] = Person(row.person_id, row.name or (old.name if old else None),
                                          row.email or (old.email if old else None), default_language)
    out = {}
    for person in people:
        known = found.get(person, Person(person, None, None, default_language))
        pref = prefs.get(person)
        out[person] = Person(person, known.name, (pref.email if pref and pref.email else known.email),
                             (pref.language if pref and pref.language else default_language))
    return out


def key_account_names(conn: Connection, ids: Iterable[str]) -> dict[str, str]:
    ids = sorted(set(ids))
    names = {}
    for chunk in _chunks(ids, 500):
        names.update(conn.execute(select(t.accounts.c.account_id, t.accounts.c.name)
                                  .where(t.accounts.c.account_id.in_(chunk))).all())
    return {i: names.get(i, i) for i in ids}


class DeliveryLog:
    def __init__(self, engine: Engine, *, webhooks: list[Webhook], default_language: str = "en"):
        self.engine = engine
        self.webhooks = webhooks
        self.default_language = default_language

    # -- recording -------------------------------------------------------------------------------------------

    def record(self, alerts: list[dict], notices: list[dict], now: datetime) -> Recorded:
        """Record what a batch of kam.alerts / kam.notices messages must cause, in one transaction."""
        with self.engine.begin() as conn:
            return self.record_in(conn, alerts, notices, now)

    def record_in(self, conn: Connection, alerts: list[dict], notices: list[dict], now: datetime) -> Recorded:
        people = {p for a in alerts for p in policy.concerned(a)} | {p for n in notices for p in n.get("recipients") or []}
        prefs = load_preferences(conn, people)
        persons = load_people(conn, people, self.default_language)
        stamp = iso(now)
        rows = []
        self._remember_alerts(conn, alerts)
        for alert in alerts:
            rows += [(d, alert) for d in policy.alert_deliveries(alert, prefs, self.webhooks)]
        for notice in notices:
            rows += [(d, notice) for d in policy.notice_deliveries(notice, prefs, self.webhooks)]
        return self._insert(conn, rows, persons, stamp)

    def _insert(self, conn: Connection, rows: list[tuple[Delivery, dict]], persons: dict[str, Person],
                stamp: str) -> Recorded:
        recorded = Recorded()
        values = []
        for delivery, message in rows:
            state = "held" if delivery.held else "pending"
            if delivery.channel == "email" and not (persons.get(delivery.recipient) and persons[delivery.recipient].email):
                state = "no_address"
            values.append({"kind": delivery.kind, "subject_id": delivery.subject_id, "status": delivery.status,
                           "recipient": delivery.recipient, "channel": delivery.channel, "state": state,
                           "severity": message.get("severity"), "key_account_id": message.get("key_account_id"),
                           "payload": json.dumps(message, separators=(",", ":")), "attempts": 0,
                           "next_attempt_at": stamp, "created_at": stamp})
        if values:
            # one cached statement, executed for many rows (SQLAlchemy batches them as multi-row INSERTs)
            stmt = insert_stmt(conn, notify_deliveries).on_conflict_do_nothing(
                index_elements=["subject_id", "status", "recipient", "channel"]).returning(
                notify_deliveries.c.state, notify_deliveries.c.recipient, notify_deliveries.c.subject_id)
            for state, recipient, subject in conn.execute(stmt, values):
                if state == "pending":
                    recorded.pending += 1
                elif state == "held":
                    recorded.held += 1
                else:
                    recorded.no_address.append((recipient, subject))
        return recorded

    def _remember_alerts(self, conn: Connection, alerts: list[dict]) -> None:
        """Keep the newest state of each alert (messages of one alert can arrive out of order)."""
        newest: dict[str, dict] = {}
        for alert in alerts:
            values = {"alert_id": alert["alert_id"], "status": alert["status"], "severity": alert["severity"],
                      "key_account_id": alert["key_account_id"], "assignee": alert["assignee"],
                      "recipients": json.dumps(alert.get("recipients") or []), "version_key": version_key(alert),
                      "payload": json.dumps(alert, separators=(",", ":")), "remind_at": policy.remind_at(alert),
                      "reminded": False}
            old = newest.get(alert["alert_id"])
            if old is None or old["version_key"] < values["version_key"]:
                newest[alert["alert_id"]] = values
        if not newest:
            return
        stmt = insert_stmt(conn, notify_alerts)
        changed = {k: stmt.excluded[k] for k in ("status", "severity", "key_account_id", "assignee", "recipients",
                                                   "version_key", "payload")}
        # A reminder already sent stays sent; one not yet due follows the newest state (gone once decided).
        changed["remind_at"] = stmt.excluded.remind_at
        conn.execute(stmt.on_conflict_do_update(index_elements=["alert_id"], set_=changed,
                                                where=notify_alerts.c.version_key < stmt.excluded.version_key),
                     [newest[k] for k in sorted(newest)])

    # -- reminders and digests -------------------------------------------------------------------------------

    def record_due_reminders(self, now: datetime, limit: int = 500) -> Recorded:
        """Reminders for high/critical alerts halfway to their deadline and still undecided; each at most once."""
        stamp = iso(now)
        with self.engine.begin() as conn:
            due = conn.execute(select(notify_alerts.c.alert_id, notify_alerts.c.payload)
                               .where(notify_alerts.c.remind_at <= stamp, notify_alerts.c.reminded.is_(False))
                               .order_by(notify_alerts.c.remind_at).limit(limit)).all()
            rows = []
            for alert_id, payload in due:
                claimed = conn.execute(update(notify_alerts).where(notify_alerts.c.alert_id == alert_id,
                                                                   notify_alerts.c.reminded.is_(False))
                                       .values(reminded=True)).rowcount
                alert = json.loads(payload)
                if claimed and policy.still_undecided(alert):
                    pref = load_preferences(conn, [alert["assignee"]]).get(alert["assignee"], policy.DEFAULT_PREFERENCE)
                    rows.append((policy.reminder_delivery(alert, pref), alert))
            persons = load_people(conn, [d.recipient for d, _ in rows], self.default_language)
            return self._insert(conn, rows, persons, stamp)

    def schedule_digests(self, day: str, period: tuple[str, str], now: datetime) -> Recorded | None:
        """One digest delivery per person with something to report for `day`; None if already scheduled."""
        stamp = iso(now)
        subject = f"digest:{day}"
        with self.engine.begin() as conn:
            marker = insert_stmt(conn, notify_deliveries).values(
                kind="digest", subject_id=subject, status="digest", recipient=DIGEST_MARKER, channel="digest",
                state="sent", payload="{}", attempts=0, next_attempt_at=stamp, created_at=stamp, sent_at=stamp,
            ).on_conflict_do_nothing(index_elements=["subject_id", "status", "recipient", "channel"])
            if not conn.execute(marker).rowcount:
                return None
            people = set()
            for assignee, recipients in conn.execute(select(notify_alerts.c.assignee, notify_alerts.c.recipients)
                                                     .where(notify_alerts.c.status.in_(policy.OPEN_STATUSES))):
                people.add(assignee)
                people.update(json.loads(recipients))
            people.update(r for (r,) in conn.execute(
                select(notify_deliveries.c.recipient).distinct()
                .where(notify_deliveries.c.kind.in_(("alert", "notice", "reminder")),
                       notify_deliveries.c.created_at > period[0], notify_deliveries.c.created_at <= period[1],
                       notify_deliveries.c.recipient.not_like("webhook:%"))))
            prefs = load_preferences(conn, people)
            wanted = sorted(p for p in people if prefs.get(p, policy.DEFAULT_PREFERENCE).digest)
            period_of = {"day": day, "since": period[0], "until": period[1]}
            rows = [(Delivery("digest", subject, "digest", p, "email"), period_of) for p in wanted]
            return self._insert(conn, rows, load_people(conn, wanted, self.default_language), stamp)

    def digest_content(self, conn: Connection, person: str, since: str, until: str):
        from services.notify.render import DigestContent

        open_alerts = []
        pattern = '%"' + person.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + '"%'
        for (payload,) in conn.execute(select(notify_alerts.c.payload).where(
                notify_alerts.c.status.in_(policy.OPEN_STATUSES),
                or_(notify_alerts.c.assignee == person, notify_alerts.c.recipients.like(pattern, escape="\\")))):
            open_alerts.append(json.loads(payload))
        told = conn.execute(select(notify_deliveries.c.kind, notify_deliveries.c.status, notify_deliveries.c.subject_id,
                                   notify_deliveries.c.payload)
                            .where(notify_deliveries.c.recipient == person,
                                   notify_deliveries.c.kind.in_(("alert", "notice")),
                                   notify_deliveries.c.created_at > since, notify_deliveries.c.created_at <= until)
                            .order_by(notify_deliveries.c.id)).all()
        buckets: dict[str, dict[str, dict]] = {"open": {}, "escalated": {}, "resolved": {}, "notice": {}}
        for kind, status, subject, payload in told:
            bucket = "notice" if kind == "notice" else "resolved" if status in ("resolved", "waived") else status
            if bucket in buckets:
                buckets[bucket][subject] = json.loads(payload)
        return DigestContent(open_alerts, list(buckets["open"].values()), list(buckets["escalated"].values()),
                             list(buckets["resolved"].values()), list(buckets["notice"].values()))

    # -- sending ---------------------------------------------------------------------------------------------

    def claim(self, owner: str, now: datetime, lease_s: float, limit: int) -> tuple[list, int]:
        """Up to `limit` due rows, leased to `owner`; also how many were taken over from a lapsed lease."""
        stamp = iso(now)
        with self.engine.begin() as conn:
            candidates = conn.execute(
                select(notify_deliveries.c.id, notify_deliveries.c.lease_owner)
                .where(notify_deliveries.c.state == "pending", notify_deliveries.c.next_attempt_at <= stamp,
                       or_(notify_deliveries.c.lease_until.is_(None), notify_deliveries.c.lease_until < stamp))
                .order_by(notify_deliveries.c.next_attempt_at, notify_deliveries.c.id).limit(limit)
                .with_for_update(skip_locked=True)).all()
            if not candidates:
                return [], 0
            ids = [c.id for c in candidates]
            conn.execute(update(notify_deliveries).where(notify_deliveries.c.id.in_(ids))
                         .values(lease_owner=owner, lease_until=iso(now + timedelta(seconds=lease_s)),
                                 attempts=notify_deliveries.c.attempts + 1))
            rows = conn.execute(select(notify_deliveries).where(notify_deliveries.c.id.in_(ids))
                                .order_by(notify_deliveries.c.next_attempt_at, notify_deliveries.c.id)).all()
        return rows, sum(1 for c in candidates if c.lease_owner is not None)

    def mark_sent(self, row_id: int, owner: str, now: datetime) -> bool:
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # No wait for the WAL flush: a crash of the *database* may forget the last few marks, and those
                # mails would be sent again (same Message-ID); a crash of notify forgets nothing. Halves the
                # time per mail on PostgreSQL. Recording (before the Kafka offsets move) stays synchronous.
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            return bool(conn.execute(update(notify_deliveries).where(notify_deliveries.c.id == row_id,
                                                                     notify_deliveries.c.lease_owner == owner)
                                     .values(state="sent", sent_at=iso(now), lease_owner=None, lease_until=None,
                                             last_error=None)).rowcount)

    def mark_failed_attempt(self, row, owner: str, now: datetime, error: str, *, max_attempts: int,
                            base_s: float, max_s: float) -> str:
        """A failed send: retried later with backoff, or recorded failed after `max_attempts`. Returns the state."""
        final = row.attempts >= max_attempts
        next_at = now + timedelta(seconds=policy.retry_delay(row.attempts, base_s, max_s))
        with self.engine.begin() as conn:
            conn.execute(update(notify_deliveries).where(notify_deliveries.c.id == row.id,
                                                         notify_deliveries.c.lease_owner == owner)
                         .values(state="failed" if final else "pending", next_attempt_at=iso(next_at),
                                 lease_owner=None, lease_until=None, last_error=error[:500]))
        return "failed" if final else "pending"

    def release(self, owner: str) -> int:
        """Give back what this process claimed but did not send (a clean stop), so others need not wait."""
        with self.engine.begin() as conn:
            return conn.execute(update(notify_deliveries).where(notify_deliveries.c.lease_owner == owner,
                                                                notify_deliveries.c.state == "pending")
                                .values(lease_owner=None, lease_until=None,
                                        attempts=notify_deliveries.c.attempts - 1)).rowcount

    def retry_failed(self, now: datetime) -> int:
        with self.engine.begin() as conn:
            return conn.execute(update(notify_deliveries).where(notify_deliveries.c.state == "failed")
                                .values(state="pending", attempts=0, next_attempt_at=iso(now))).rowcount

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return dict(conn.execute(select(notify_deliveries.c.state, func.count())
                                     .where(notify_deliveries.c.recipient != DIGEST_MARKER)
                                     .group_by(notify_deliveries.c.state)).all())


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


__all__ = ["DeliveryLog", "Recorded", "load_people", "load_preferences", "key_account_names", "version_key",
           "DIGEST_MARKER"]

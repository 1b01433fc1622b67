"""Who is told what, on which channel, and when: pure decisions, no I/O.

The issue's rules in one place: an alert's status change concerns its assignee, and for
open/escalated/resolved changes also its other recipients; each person gets it by e-mail at once
when their preferences ask for that channel and severity (low alerts wait for the digest by
default), otherwise it is held for the daily digest. Notices are held for the digest unless a
person asked for them at once. Chat channels get every change of their key account.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

#: status changes that reach every recipient; the others (acknowledged, waived) only the assignee
BROADCAST_STATUSES = frozenset({"open", "escalated", "resolved"})
SEVERITIES = ("low", "medium", "high", "critical")
REMINDED_SEVERITIES = frozenset({"high", "critical"})
OPEN_STATUSES = frozenset({"open", "acknowledged", "escalated"})
STATUS_RANK = {"open": 0, "acknowledged": 1, "escalated": 2, "resolved": 3, "waived": 3}


@dataclass(frozen=True)
class Preference:
    """A person's wishes; the defaults are what someone who never said anything gets."""

    channels: tuple[str, ...] = ("email",)
    severities: tuple[str, ...] = ("medium", "high", "critical")
    notices: bool = False
    digest: bool = True
    language: str | None = None
    email: str | None = None


DEFAULT_PREFERENCE = Preference()


@dataclass(frozen=True)
class Delivery:
    """One row of the delivery log to be: what, to whom, on which channel, and whether it waits."""

    kind: str  # alert | notice | reminder | digest
    subject_id: str
    status: str
    recipient: str
    channel: str  # email | teams | slack | digest
    held: bool = False  # True: kept for the digest, not sent on its own


@dataclass(frozen=True)
class Webhook:
    key: str  # the key account id it serves, or "*" for the default channel
    kind: str  # teams | slack
    url: str = field(repr=False)  # holds a secret token: never printed


def concerned(alert: dict) -> list[str]:
    """The people an alert's status change concerns, assignee first, each once."""
    people = [alert["assignee"]]
    if alert["status"] in BROADCAST_STATUSES:
        people += [p for p in alert.get("recipients") or [] if p != alert["assignee"]]
    return list(dict.fromkeys(people))


def wants_mail_now(pref: Preference, *, severity: str | None, kind: str) -> bool:
    if "email" not in pref.channels:
        return False
    if kind == "notice":
        return pref.notices
    if kind == "reminder":
        return True  # reminders exist only for high/critical alerts that are running out of time
    return severity in pref.severities


def alert_deliveries(alert: dict, prefs: dict[str, Preference], webhooks: list[Webhook]) -> list[Delivery]:
    """The notifications one kam.alerts message causes."""
    out = []
    for person in concerned(alert):
        now = wants_mail_now(prefs.get(person, DEFAULT_PREFERENCE), severity=alert["severity"], kind="alert")
        out.append(Delivery("alert", alert["alert_id"], alert["status"], person,
                            "email" if now else "digest", held=not now))
    out += [Delivery("alert", alert["alert_id"], alert["status"], f"webhook:{hook.key}", hook.kind)
            for hook in webhooks_for(alert["key_account_id"], webhooks)]
    return out


def notice_deliveries(notice: dict, prefs: dict[str, Preference], webhooks: list[Webhook]) -> list[Delivery]:
    """The notifications one kam.notices message causes."""
    out = []
    for person in dict.fromkeys(notice.get("recipients") or []):
        now = wants_mail_now(prefs.get(person, DEFAULT_PREFERENCE), severity=None, kind="notice")
        out.append(Delivery("notice", notice["notice_id"], "notice", person, "email" if now else "digest",
                            held=not now))
    out += [Delivery("notice", notice["notice_id"], "notice", f"webhook:{hook.key}", hook.kind)
            for hook in webhooks_for(notice["key_account_id"], webhooks)]
    return out


def reminder_delivery(alert: dict, pref: Preference) -> Delivery:
    now = wants_mail_now(pref, severity=alert["severity"], kind="reminder")
    return Delivery("reminder", alert["alert_id"], "reminder", alert["assignee"], "email" if now else "digest",
                    held=not now)


def webhooks_for(key_account_id: str, webhooks: list[Webhook]) -> list[Webhook]:
    """The key account's own channel(s), else the default channel ("*"), else none."""
    own = [h for h in webhooks if h.key == key_account_id]
    return own or [h for h in webhooks if h.key == "*"]


def parse_webhooks(config: dict[str, dict[str, str]]) -> list[Webhook]:
    hooks = []
    for key, spec in sorted(config.items()):
        kind = (spec.get("kind") or "").lower()
        if kind not in ("teams", "slack") or not spec.get("url"):
            raise ValueError(f"webhook {key!r}: needs kind teams|slack and a url")
        hooks.append(Webhook(key, kind, spec["url"]))
    return hooks


def is_newer(incoming: dict, stored_status: str, stored_updated_at: str) -> bool:
    """Whether a kam.alerts message supersedes the stored state (messages of one alert may come out of order)."""
    if incoming["updated_at"] != stored_updated_at:
        return _instant(incoming["updated_at"]) > _instant(stored_updated_at)
    return STATUS_RANK.get(incoming["status"], 0) > STATUS_RANK.get(stored_status, 0)


def remind_at(alert: dict) -> str | None:
    """Halfway from creation to due_at, for high/critical alerts that have a deadline and are still open."""
    if alert["severity"] not in REMINDED_SEVERITIES or not alert.get("due_at") or alert["status"] != "open":
        return None
    created, due = _instant(alert["created_at"]), _instant(alert["due_at"])
    return iso(created + (due - created) / 2)


def still_undecided(alert: dict) -> bool:
    """Open, or a dunning on hold that was only acknowledged (CONTRACT §5 escalates both)."""
    if alert["status"] == "open":
        return True
    return (alert["status"] == "acknowledged" and alert["rule"] == "key_account_dunning"
            and (alert.get("data") or {}).get("action", "hold") == "hold")


def retry_delay(attempts: int, base_s: float, max_s: float) -> float:
    """Exponential backoff: base, 2×base, 4×base, … capped at max_s."""
    return min(max_s, base_s * (2 ** max(0, attempts - 1)))


def digest_date_due(now: datetime, hour: int, tz: str) -> date:
    """The newest digest date whose hour has come (today's once past the hour, else yesterday's)."""
    local = now.astimezone(ZoneInfo(tz))
    return local.date() if local.hour >= hour else local.date() - timedelta(days=1)


def digest_period(day: date, hour: int, tz: str) -> tuple[str, str]:
    """The day's digest covers what happened since the previous digest: (day−1 at hour, day at hour], as UTC."""
    zone = ZoneInfo(tz)
    until = datetime.combine(day, time(hour), zone)
    since = datetime.combine(day - timedelta(days=1), time(hour), zone)
    return iso(since), iso(until)


def message_id(subject_id: str, status: str, recipient: str, domain: str) -> str:
    """A Message-ID derived from (subject, status, recipient): a resend is recognisably the same mail."""
    digest = hashlib.sha256(f"{subject_id}\x1f{status}\x1f{recipient}".encode()).hexdigest()[:32]
    return f"<{digest}.onevoice@{domain}>"


def iso(moment: datetime) -> str:
    return moment.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))

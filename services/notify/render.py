"""Notifications as people read them: e-mail subject, plain text and HTML, chat cards, the digest.

Pure functions of the message, the person and the configuration; the senders only transmit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.utils import parseaddr
from pathlib import Path
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape

from services.notify import mime
from services.notify.mime import OutgoingMail
from services.notify.policy import message_id
from services.notify.texts import words

_ENV = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                   autoescape=select_autoescape(["html.j2"]), keep_trailing_newline=True)
SEVERITY_COLOURS = {"critical": "#7f1d1d", "high": "#dc2626", "medium": "#d97706", "low": "#6b7280"}
SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}


@dataclass(frozen=True)
class Person:
    person_id: str
    name: str | None
    email: str | None
    language: str


@dataclass(frozen=True)
class Mail:
    subject: str
    text: str
    html: str


def alert_link(base_url: str, alert_id: str) -> str:
    return f"{base_url.rstrip('/')}/alerts/{alert_id}"


def local_time(moment: str | None, tz: str) -> str | None:
    if not moment:
        return None
    local = datetime.fromisoformat(moment.replace("Z", "+00:00")).astimezone(ZoneInfo(tz))
    return local.strftime("%Y-%m-%d %H:%M %Z")


def alert_subject(alert: dict, key_account_name: str, *, language: str, reminder: bool = False) -> str:
    """`[onevoice] HIGH · ACME Group · <title>`, the change named when it is not a new alert."""
    t = words(language)
    subject = f"[onevoice] {alert['severity'].upper()} · {key_account_name} · {alert['title']}"
    if reminder:
        return f"[onevoice] {t['reminder']}: {subject.removeprefix('[onevoice] ')}"
    if alert["status"] != "open":
        subject += f" — {t['status.' + alert['status']]}"
    return subject


def render_alert(alert: dict, person: Person, *, key_account_name: str, base_url: str, tz: str,
                 reminder: bool = False) -> Mail:
    t = words(person.language)
    subject = alert_subject(alert, key_account_name, language=person.language, reminder=reminder)
    context = {
        "t": t, "language": person.language, "subject": subject, "item": alert,
        "person_name": person.name or person.person_id, "person_id": person.person_id,
        "lead": t["lead.reminder" if reminder else "lead." + alert["status"]],
        "status_word": t["status." + alert["status"]], "key_account_name": key_account_name,
        "deadline": local_time(alert.get("due_at"), tz), "evidence": alert.get("evidence") or [],
        "data": _data_lines(alert.get("data") or {}), "link": alert_link(base_url, alert["alert_id"]),
        "colour": SEVERITY_COLOURS.get(alert["severity"], "#1d4ed8"),
        "why": t["why.assignee" if person.person_id == alert["assignee"] else "why.recipient"],
    }
    return Mail(subject, _ENV.get_template("alert.txt.j2").render(context),
                _ENV.get_template("alert.html.j2").render(context))


def render_notice(notice: dict, person: Person, *, key_account_name: str, base_url: str) -> Mail:
    t = words(person.language)
    subject = f"[onevoice] {t['notice']} · {key_account_name} · {notice['title']}"
    item = {"title": notice["title"], "detail": notice["detail"], "severity": "info", "rule": None,
            "assignee": None, "account_id": notice.get("account_id")}
    context = {"t": t, "language": person.language, "subject": subject, "item": item,
               "person_name": person.name or person.person_id, "person_id": person.person_id,
               "lead": t["lead.notice"], "status_word": t["notice"], "key_account_name": key_account_name,
               "deadline": None, "evidence": [notice["about"]], "data": [],
               "link": f"{base_url.rstrip('/')}/notices/{notice['notice_id']}", "colour": "#1d4ed8",
               "why": t["why.notice"]}
    return Mail(subject, _ENV.get_template("alert.txt.j2").render(context),
                _ENV.get_template("alert.html.j2").render(context))


@dataclass(frozen=True)
class DigestContent:
    """What one person's digest lists; each alert a kam.alerts message, each notice a kam.notices one."""

    open_alerts: list[dict]
    new: list[dict]
    escalated: list[dict]
    resolved: list[dict]
    notices: list[dict]


def render_digest(person: Person, day: str, period: tuple[str, str], content: DigestContent, *,
                  key_account_names: dict[str, str], base_url: str, tz: str) -> Mail:
    t = words(person.language)

    new_ids = {a.get("alert_id") for a in content.new}

    def rows(items, deadlines=True, mark_new=False):
        ordered = sorted(items, key=lambda a: (SEVERITY_ORDER.get(a.get("severity"), 9), a.get("due_at") or "~",
                                               a.get("title", "")))
        return [{"severity": a.get("severity", "info"), "colour": SEVERITY_COLOURS.get(a.get("severity"), "#1d4ed8"),
                 "key_account": key_account_names.get(a["key_account_id"], a["key_account_id"]),
                 "title": a["title"], "new": mark_new and a.get("alert_id") in new_ids,
                 "link": alert_link(base_url, a["alert_id"]) if "alert_id" in a
                 else f"{base_url.rstrip('/')}/notices/{a['notice_id']}",
                 "deadline": local_time(a.get("due_at"), tz) if deadlines else None} for a in ordered]

    sections = [
        {"heading": t["digest.open"].format(count=len(content.open_alerts)), "short": t["digest.short_open"],
         "rows": rows(content.open_alerts, mark_new=True), "deadlines": True},
        {"heading": t["digest.escalated"].format(count=len(content.escalated)), "short": t["status.escalated"],
         "rows": rows(content.escalated), "deadlines": True},
        {"heading": t["digest.resolved"].format(count=len(content.resolved)), "short": t["status.resolved"],
         "rows": rows(content.resolved, deadlines=False), "deadlines": False},
        {"heading": t["digest.notices"].format(count=len(content.notices)), "short": t["digest.short_notices"],
         "rows": rows(content.notices, deadlines=False), "deadlines": False},
    ]
    subject = "[onevoice] " + t["digest.subject"].format(date=day, open=len(content.open_alerts),
                                                         escalated=len(content.escalated),
                                                         resolved=len(content.resolved))
    context = {"t": t, "language": person.language, "subject": subject, "person_id": person.person_id,
               "person_name": person.name or person.person_id, "title": t["digest.title"].format(date=day),
               "period": t["digest.period"].format(since=local_time(period[0], tz), until=local_time(period[1], tz),
                                                   tz=tz),
               "sections": sections}
    return Mail(subject, _ENV.get_template("digest.txt.j2").render(context),
                _ENV.get_template("digest.html.j2").render(context))


def email_message(mail: Mail, *, sender: str, person: Person, subject_id: str, status: str,
                  headers: dict[str, str] | None = None, thread_of: str | None = None) -> OutgoingMail:
    """The e-mail (text + HTML alternative) with a Message-ID derived from (subject, status, recipient)."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "onevoice.local"
    extra = {}
    if thread_of:  # status changes of one alert thread under its first mail in the person's client
        first = message_id(thread_of, "open", person.person_id, domain)
        extra = {"In-Reply-To": first, "References": first}
    return mime.build(sender=sender, to_name=person.name, to_addr=person.email or "", subject=mail.subject,
                      message_id=message_id(subject_id, status, person.person_id, domain),
                      headers={**extra, **(headers or {})}, text=mail.text, html=mail.html)


def slack_payload(item: dict, key_account_name: str, link: str, *, heading: str) -> dict:
    """Slack incoming-webhook message: a fallback text and one section with the link."""
    text = f"*{heading}* · {key_account_name}\n<{link}|{_slack_escape(item['title'])}>"
    return {"text": f"{heading} · {key_account_name} · {item['title']} {link}",
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}},
                       {"type": "context", "elements": [{"type": "mrkdwn", "text": _slack_escape(item["detail"][:300])}]}]}


def teams_payload(item: dict, key_account_name: str, link: str, *, heading: str, colour: str = "attention") -> dict:
    """Microsoft Teams incoming-webhook (Workflows) message: an Adaptive Card with the link."""
    card = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard", "version": "1.4",
            "body": [{"type": "TextBlock", "text": heading, "weight": "Bolder", "color": colour},
                     {"type": "TextBlock", "text": item["title"], "size": "Medium", "wrap": True},
                     {"type": "TextBlock", "text": key_account_name, "isSubtle": True, "spacing": "None"},
                     {"type": "TextBlock", "text": item["detail"][:300], "wrap": True}],
            "actions": [{"type": "Action.OpenUrl", "title": "Open in onevoice", "url": link}]}
    return {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                                                "contentUrl": None, "content": card}]}


def card_heading(item: dict, kind: str) -> str:
    if kind == "notice":
        return "NOTICE"
    return f"{item['severity'].upper()} · {item['status']}"


def _data_lines(data: dict) -> list[tuple[str, str]]:
    lines = []
    for key, value in data.items():
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            lines.append((key.replace("_", " "), str(value)))
    return lines[:20]


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

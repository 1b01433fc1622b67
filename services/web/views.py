"""What one screen (or API answer) shows, assembled from the store for one viewer.

Shared by the API (JSON) and the pages (HTML), so both show the same facts and apply the same
visibility: what the viewer may not see is reported as absent (None), never as forbidden.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timezone

from sqlalchemy import Connection

from schemas.outputs import OPEN_STATUSES
from services.rules.alerts import allowed_decisions, refuse_decision
from services.web import queries
from services.web.queries import Viewer

DUE_SEVERITIES = frozenset({"high", "critical"})


def escalates_at(alert: dict) -> str | None:
    """When the alert escalates if nobody acts (CONTRACT §5), or None: not due, already escalated, closed,
    or an open dunning alert that was decided already."""
    if alert["due_at"] is None or alert.get("escalated") or alert["status"] not in OPEN_STATUSES:
        return None
    if alert["status"] == "acknowledged" and not alert.get("awaiting_decision"):
        return None
    return alert["due_at"]


def alert_detail(conn: Connection, viewer: Viewer, alert_id: str) -> dict | None:
    row = queries.alert_row(conn, alert_id)
    if row is None or not viewer.sees_alert(row):
        return None
    team = queries.team_of(conn, row["key_account_id"])
    history = queries.history(conn, alert_id)
    sent = [d for d in queries.sent_decisions(conn, alert_id) if viewer.admin or d["decided_by"] == viewer.person_id]
    message = queries.as_message(row)
    people = {message["assignee"], *message["recipients"], *(h["assignee"] for h in history),
              *(h["decided_by"] for h in history), *(m.person_id for m in team.members)}
    facts = queries.evidence(conn, row)
    people |= {f["facts"].get("agreed_by") for f in facts} | {f["facts"].get("launched_by") for f in facts}
    names = queries.names(conn, people)
    for entry in history:
        entry["assignee_name"] = names.get(entry["assignee"])
        entry["decided_by_name"] = names.get(entry["decided_by"]) if entry["decided_by"] else None
    return dict(
        message, history=history, evidence_facts=facts, instruction=queries.instruction(row),
        allowed_decisions=list(allowed_decisions(viewer.person_id, rule=row["rule"], status=row["status"],
                                                 key_account_id=row["key_account_id"], team=team)),
        escalates_at=escalates_at(row), decisions=[sent_decision(d) for d in sent], names=names,
        key_account_name=queries.account_names(conn, [row["key_account_id"]]).get(row["key_account_id"]))


def sent_decision(row: dict) -> dict:
    status = row.get("outcome") or "pending"
    error = {"code": row["code"], "message": row["message"]} if status == "rejected" else None
    return {"event_id": row["event_id"], "decision": row["decision"], "decided_by": row["decided_by"],
            "comment": row["comment"], "sent_at": row["sent_at"], "status": status, "error": error}


@dataclass(frozen=True)
class DecisionCheck:
    """Why the inbox will not send a decision: HTTP status, the contract's code, a sentence."""

    status_code: int
    code: str
    message: str


def check_decision(conn: Connection, viewer: Viewer, alert_id: str, decision: str) -> DecisionCheck | None:
    """None if the decision may go out; else 404 (unseen), 403 (not this person's, or not this rule's) or
    409 (the alert is closed), by the same policy the pipeline applies."""
    row = queries.alert_row(conn, alert_id)
    if row is None or not viewer.sees_alert(row):
        return DecisionCheck(404, "unknown_alert", "no such alert")
    team = queries.team_of(conn, row["key_account_id"])
    refusal = refuse_decision(decision, viewer.person_id, rule=row["rule"], status=row["status"],
                              key_account_id=row["key_account_id"], team=team)
    if refusal is None:
        return None
    if refusal.code == "invalid_decision" and row["status"] not in OPEN_STATUSES:
        return DecisionCheck(409, refusal.code, refusal.message)
    return DecisionCheck(403, refusal.code, refusal.message)


def me(conn: Connection, viewer: Viewer) -> dict:
    roles = queries.memberships(conn, viewer.person_id)
    accounts = queries.account_names(conn, roles)
    return {"person_id": viewer.person_id, "name": queries.names(conn, [viewer.person_id]).get(viewer.person_id),
            "admin": viewer.admin,
            "key_accounts": [{"key_account_id": root, "name": accounts.get(root),
                              "roles": [{"role": m.role, "country": m.country}
                                        for m in sorted(members, key=lambda m: m.role)]}
                             for root, members in sorted(roles.items())]}


def key_account_detail(conn: Connection, viewer: Viewer, key_account_id: str) -> dict | None:
    root = queries.account(conn, key_account_id)
    if root is None or root["root_id"] != key_account_id or not viewer.sees_key_account(key_account_id):
        return None
    tree = queries.hierarchy(conn, key_account_id)
    team = queries.team_rows(conn, key_account_id)
    agreements = queries.active_agreements(conn, [a["account_id"] for a in tree], date.today())
    alerts = queries.open_alerts_of(conn, key_account_id)
    notices = queries.notices_of_key_account(conn, key_account_id)
    for n in notices:
        n["read"] = None
    if viewer.person_id:
        mine = {n["notice_id"]: n["read"] for n in queries.my_notices(conn, viewer, limit=200)
                if n["key_account_id"] == key_account_id}
        for n in notices:
            n["read"] = mine.get(n["notice_id"])
    names = queries.names(conn, {a["agreed_by"] for a in agreements} | {a["assignee"] for a in alerts})
    return {"key_account_id": key_account_id, "name": root["name"], "country": root["country"], "tier": root["tier"],
            "hierarchy": tree, "team": team, "active_agreements": agreements,
            "open_alerts": [queries.as_message(a) for a in alerts], "recent_notices": notices, "names": names,
            "escalations": {a["alert_id"]: escalates_at(a) for a in alerts}}


def time_left(when: str | None, now: datetime | None = None) -> tuple[str, bool] | None:
    """A due time as ("3 h 20 min", overdue?) from now; None without one."""
    if not when:
        return None
    now = now or datetime.now(timezone.utc)
    due = datetime.fromisoformat(when.replace("Z", "+00:00"))
    seconds = int((due - now).total_seconds())
    overdue, seconds = seconds < 0, abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    text = f"{days} d {hours} h" if days else f"{hours} h {minutes} min" if hours else f"{minutes} min"
    return text, overdue


def data_of(alert: dict) -> dict:
    return json.loads(alert["data"]) if isinstance(alert.get("data"), str) else alert.get("data") or {}

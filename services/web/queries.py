"""What the inbox reads from the store: people and their key accounts, alerts, evidence, notices.

Read-only over the pipeline's tables (the pipeline is their only writer). Every list is
bounded and served by an index of migration 0009 or earlier, so a page costs a few
milliseconds whatever the store holds (bench/inbox_latency.py measures it).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date

from collections.abc import Iterator
from contextlib import contextmanager

import orjson
from sqlalchemy import Connection, Engine, and_, literal_column, or_, select, tuple_

from schemas.outputs import OPEN_STATUSES
from services.domain import Team, TeamMember
from services.outputs import alert_message
from services.store import tables as t

# Identical to the expressions of the index ix_alerts_urgency (migration 0009), or it would not be used.
URGENCY_RANK = literal_column("(CASE severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 "
                              "ELSE 3 END)")
URGENCY_TIME = literal_column("(COALESCE(due_at, created_at))")
SEVERITY_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3}
MAX_LIMIT = 200


@dataclass(frozen=True)
class Viewer:
    """The signed-in person as the inbox sees them: admin or not, and the key accounts whose team they're on."""

    person_id: str
    admin: bool = False
    key_accounts: frozenset[str] = frozenset()

    def sees_key_account(self, key_account_id: str) -> bool:
        return self.admin or key_account_id in self.key_accounts

    def sees_alert(self, alert) -> bool:
        """Alerts of my key accounts' teams, and alerts assigned to me (everything, for an admin)."""
        return self.sees_key_account(alert["key_account_id"]) or alert["assignee"] == self.person_id


@dataclass(frozen=True)
class AlertFilter:
    statuses: tuple[str, ...] = ()
    assignee: str | None = None
    key_account_ids: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    involving: str | None = None  # assigned to this person or naming them among the recipients


@dataclass
class Page:
    items: list[dict] = field(default_factory=list)
    next_cursor: str | None = None


# -- people -------------------------------------------------------------------------------------


def memberships(conn: Connection, person_id: str) -> dict[str, list[TeamMember]]:
    """The person's current roles per key account (root), by the pipeline's last-writer-wins of team events."""
    rows = conn.execute(
        select(t.accounts.c.root_id, t.team_members).join(t.accounts, t.accounts.c.account_id == t.team_members.c.account_id)
        .where(t.team_members.c.person_id == person_id)).all()
    return {root: members for root, members in _latest_members(rows).items() if members}


def team_rows(conn: Connection, key_account_id: str) -> list[dict]:
    """The team of a key account, each member with role, country, name and e-mail, in a stable order."""
    rows = conn.execute(
        select(t.accounts.c.root_id, t.team_members).join(t.accounts, t.accounts.c.account_id == t.team_members.c.account_id)
        .where(t.accounts.c.root_id == key_account_id)).all()
    members = _latest_rows(rows).get(key_account_id, [])
    return sorted(({"person_id": r.person_id, "role": r.role, "country": r.country, "name": r.name, "email": r.email}
                   for r in members), key=lambda m: (m["role"], m["person_id"]))


def team_of(conn: Connection, key_account_id: str) -> Team:
    """The key account's team as the decision policy (services/rules/alerts.py) takes it."""
    return Team(tuple(TeamMember(m["person_id"], m["role"], m["country"], m["name"])
                      for m in team_rows(conn, key_account_id)))


def _latest_rows(rows) -> dict[str, list]:
    """Per root, the present assignments after last-writer-wins per (person, role), as the pipeline judges."""
    latest: dict[str, dict[tuple[str, str], object]] = defaultdict(dict)
    for row in rows:
        slot = (row.person_id, row.role)
        current = latest[row.root_id].get(slot)
        if current is None or (current.event_time, current.event_id) < (row.event_time, row.event_id):
            latest[row.root_id][slot] = row
    return {root: [r for r in slots.values() if r.present] for root, slots in latest.items()}


def _latest_members(rows) -> dict[str, list[TeamMember]]:
    return {root: [TeamMember(r.person_id, r.role, r.country, r.name) for r in members]
            for root, members in _latest_rows(rows).items()}


def names(conn: Connection, person_ids) -> dict[str, str]:
    """Display names the team events gave (the newest one per person); people without one are left out."""
    wanted = sorted({p for p in person_ids if p})
    if not wanted:
        return {}
    rows = conn.execute(select(t.team_members.c.person_id, t.team_members.c.name, t.team_members.c.event_time)
                        .where(t.team_members.c.person_id.in_(wanted), t.team_members.c.name.is_not(None))).all()
    best: dict[str, tuple[str, str]] = {}
    for person_id, name, at in rows:
        if person_id not in best or best[person_id][0] < at:
            best[person_id] = (at, name)
    return {person_id: name for person_id, (_, name) in best.items()}


def account_names(conn: Connection, account_ids) -> dict[str, str]:
    wanted = sorted({a for a in account_ids if a})
    if not wanted:
        return {}
    return dict(conn.execute(select(t.accounts.c.account_id, t.accounts.c.name)
                             .where(t.accounts.c.account_id.in_(wanted))).all())


# -- alerts -------------------------------------------------------------------------------------


def list_alerts(conn: Connection, viewer: Viewer, flt: AlertFilter, *, limit: int = 50,
                cursor: str | None = None) -> Page:
    """The alerts the viewer may see that pass the filter, most urgent first, one page after `cursor`."""
    a = t.alerts
    limit = max(1, min(limit, MAX_LIMIT))
    conditions = []
    if not viewer.admin:
        conditions.append(or_(a.c.assignee == viewer.person_id, a.c.key_account_id.in_(sorted(viewer.key_accounts)))
                          if viewer.key_accounts else a.c.assignee == viewer.person_id)
    if flt.statuses:
        conditions.append(a.c.status.in_(flt.statuses))
    if flt.assignee:
        conditions.append(a.c.assignee == flt.assignee)
    if flt.key_account_ids:
        conditions.append(a.c.key_account_id.in_(flt.key_account_ids))
    if flt.rules:
        conditions.append(a.c.rule.in_(flt.rules))
    if flt.severities:
        conditions.append(a.c.severity.in_(flt.severities))
    if flt.involving:
        conditions.append(or_(a.c.assignee == flt.involving,
                              a.c.recipients.like(f"%{_like_escape(_json_text(flt.involving))}%", escape="\\")))
    after = decode_cursor(cursor)
    if after is not None:
        conditions.append(tuple_(URGENCY_RANK, URGENCY_TIME, a.c.alert_id) > tuple_(*after))
    query = (select(a, URGENCY_RANK.label("urgency_rank"), URGENCY_TIME.label("urgency_time")).where(and_(*conditions))
             .order_by(URGENCY_RANK, URGENCY_TIME, a.c.alert_id).limit(limit + 1))
    rows = conn.execute(query).mappings().all()
    page = Page(items=[dict(r) for r in rows[:limit]])
    if len(rows) > limit:
        last = rows[limit - 1]
        page.next_cursor = encode_cursor(last["urgency_rank"], last["urgency_time"], last["alert_id"])
    return page


def encode_cursor(rank: int, at: str, alert_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([rank, at, alert_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[int, str, str] | None:
    """The position a cursor names; a malformed one raises ValueError (the API answers 422)."""
    if not cursor:
        return None
    try:
        rank, at, alert_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ValueError("malformed cursor") from exc
    if not (isinstance(rank, int) and isinstance(at, str) and isinstance(alert_id, str)):
        raise ValueError("malformed cursor")
    return rank, at, alert_id


def _json_text(value: str) -> str:
    """A string as the pipeline writes it inside its JSON columns (orjson, UTF-8 unescaped)."""
    return orjson.dumps(value).decode()


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def alert_row(conn: Connection, alert_id: str) -> dict | None:
    row = conn.execute(select(t.alerts).where(t.alerts.c.alert_id == alert_id)).mappings().first()
    return dict(row) if row else None


def as_message(row: dict) -> dict:
    """The alert in the shape of its kam.alerts message (CONTRACT §6)."""
    return alert_message(row)


def history(conn: Connection, alert_id: str) -> list[dict]:
    """Every status change, oldest first: when, status, assignee, by whom, caused by which event, comment."""
    h = t.alert_history
    rows = conn.execute(select(h.c.at, h.c.status, h.c.assignee, h.c.decided_by, h.c.caused_by, h.c.comment)
                        .where(h.c.alert_id == alert_id).order_by(h.c.at, h.c.id)).mappings().all()
    return [dict(r) for r in rows]


def evidence(conn: Connection, alert: dict) -> list[dict]:
    """The alert's evidence as readable facts: agreements and promotions from the store, the dunning,
    the shortage or the account from the alert's own data, in the order of its evidence ids."""
    ids = json.loads(alert["evidence"])
    data = json.loads(alert["data"] or "{}")
    at_alert = dict(tag.rsplit("@", 1) for tag in (alert.get("versions") or "").split("|") if "@" in tag)
    rule = alert["rule"]
    in_data = rule in ("key_account_dunning", "scarce_stock_allocation")  # their facts are in the alert's data
    agreements = {} if in_data or rule == "key_account_handover" else {
        r["agreement_id"]: dict(r) for r in conn.execute(
            select(t.agreements).where(t.agreements.c.agreement_id.in_(ids))).mappings()}
    promotions = {} if rule != "promotion_undercuts_global" else {
        r["promotion_id"]: dict(r) for r in conn.execute(
            select(t.promotions).where(t.promotions.c.promotion_id.in_(ids))).mappings()}
    accounts = {} if in_data or len(agreements) + len(promotions) == len(ids) else {
        r["account_id"]: dict(r) for r in conn.execute(
            select(t.accounts).where(t.accounts.c.account_id.in_(ids))).mappings()}
    facts = []
    for evidence_id in ids:
        if evidence_id in agreements:
            row = agreements[evidence_id]
            row["version_at_alert"] = int(at_alert[evidence_id]) if evidence_id in at_alert else None
            row["active"] = _active(row, date.today())
            facts.append({"id": evidence_id, "kind": "agreement", "facts": row})
        elif evidence_id in promotions:
            row = promotions[evidence_id]
            row.pop("event_id", None), row.pop("event_time", None)
            facts.append({"id": evidence_id, "kind": "promotion", "facts": row})
        elif alert["rule"] == "key_account_dunning":
            facts.append({"id": evidence_id, "kind": "dunning",
                          "facts": {k: data.get(k) for k in ("dunning_id", "invoice_id", "level", "amount", "currency",
                                                             "due_date", "proposed_action")}
                          | {"account_id": alert["account_id"]}})
        elif alert["rule"] == "scarce_stock_allocation":
            facts.append({"id": evidence_id, "kind": "shortage",
                          "facts": {"item_id": data.get("item_id", evidence_id), "available_qty": data.get("available_qty"),
                                    "orders": data.get("orders", [])}})
        elif evidence_id in accounts:
            row = accounts[evidence_id]
            facts.append({"id": evidence_id, "kind": "account",
                          "facts": {k: row[k] for k in ("account_id", "name", "parent_id", "country", "tier")}})
        else:
            facts.append({"id": evidence_id, "kind": "unknown", "facts": {}})
    return facts


def _active(agreement: dict, today: date) -> bool:
    """CONTRACT §4 "Active", over a stored agreement row."""
    if agreement["kind"] == "withdrawal":
        return False
    if agreement["kind"] == "contract" and agreement["status"] != "signed":
        return False
    return agreement["valid_to"] is None or agreement["valid_to"] >= today.isoformat()


def instruction(alert: dict) -> dict | None:
    """What finance/ERP was told about this alert's case, as the alert's data records it (None: nothing)."""
    data = json.loads(alert["data"] or "{}")
    if alert["rule"] == "key_account_dunning" and data.get("instruction"):
        return {"kind": "dunning", "ref_id": data.get("dunning_id"), "action": data["instruction"],
                "account_id": alert["account_id"], "decided_by": data.get("decided_by"),
                "comment": data.get("comment"), "allocation": []}
    if alert["rule"] == "scarce_stock_allocation":
        return {"kind": "allocation", "ref_id": data.get("item_id"), "action": "allocate",
                "account_id": alert["account_id"], "decided_by": None, "comment": None,
                "allocation": [{"order_id": o["order_id"], "qty": o.get("allocated", 0)} for o in data.get("orders", [])]}
    return None


def sent_decisions(conn: Connection, alert_id: str) -> list[dict]:
    """Decisions the inbox published on this alert, newest first, each with its outcome (None: pending)."""
    from services.web.tables import web_decisions as d

    o = t.decision_outcomes
    rows = conn.execute(select(d, o.c.status.label("outcome"), o.c.code, o.c.message)
                        .select_from(d.outerjoin(o, and_(o.c.source == d.c.source, o.c.event_id == d.c.event_id)))
                        .where(d.c.alert_id == alert_id).order_by(d.c.sent_at.desc()).limit(20)).mappings().all()
    return [dict(r) for r in rows]


def decision(conn: Connection, event_id: str) -> dict | None:
    """A decision the inbox published, with its outcome from decision_outcomes (outcome None: still pending)."""
    from services.web.tables import web_decisions as d

    o = t.decision_outcomes
    row = conn.execute(select(d, o.c.status.label("outcome"), o.c.code, o.c.message)
                       .select_from(d.outerjoin(o, and_(o.c.source == d.c.source, o.c.event_id == d.c.event_id)))
                       .where(d.c.event_id == event_id)).mappings().first()
    return dict(row) if row else None


# -- key accounts -------------------------------------------------------------------------------


def account(conn: Connection, account_id: str) -> dict | None:
    row = conn.execute(select(t.accounts).where(t.accounts.c.account_id == account_id)).mappings().first()
    return dict(row) if row else None


def hierarchy(conn: Connection, key_account_id: str) -> list[dict]:
    """The key account's accounts as a tree in reading order, each with its depth below the root."""
    rows = conn.execute(select(t.accounts.c.account_id, t.accounts.c.name, t.accounts.c.parent_id, t.accounts.c.country,
                               t.accounts.c.tier).where(t.accounts.c.root_id == key_account_id)).mappings().all()
    children: dict[str | None, list[dict]] = defaultdict(list)
    for row in rows:
        children[row["parent_id"] if row["account_id"] != key_account_id else None].append(dict(row))
    ordered: list[dict] = []

    def walk(parent: str | None, depth: int) -> None:
        for row in sorted(children.get(parent, []), key=lambda r: r["account_id"]):
            ordered.append(dict(row, depth=depth))
            if depth < 50:
                walk(row["account_id"], depth + 1)

    walk(None, 0)
    return ordered


def active_agreements(conn: Connection, account_ids: list[str], today: date) -> list[dict]:
    """The active agreements (CONTRACT §4) of these accounts."""
    g = t.agreements
    if not account_ids:
        return []
    rows = conn.execute(select(g).where(
        g.c.account_id.in_(account_ids), g.c.kind != "withdrawal",
        or_(g.c.kind != "contract", g.c.status == "signed"),
        or_(g.c.valid_to.is_(None), g.c.valid_to >= today.isoformat()))
        .order_by(g.c.kind, g.c.scope, g.c.product_id, g.c.service_id, g.c.agreement_id).limit(500)).mappings().all()
    return [dict(r) for r in rows]


def open_alerts_of(conn: Connection, key_account_id: str, limit: int = 100) -> list[dict]:
    a = t.alerts
    rows = conn.execute(select(a).where(a.c.key_account_id == key_account_id, a.c.status.in_(OPEN_STATUSES))
                        .order_by(URGENCY_RANK, URGENCY_TIME, a.c.alert_id).limit(limit)).mappings().all()
    return [dict(r) for r in rows]


# -- notices ------------------------------------------------------------------------------------


def notices_of_key_account(conn: Connection, key_account_id: str, limit: int = 20) -> list[dict]:
    n = t.notices
    rows = conn.execute(select(n).where(n.c.key_account_id == key_account_id)
                        .order_by(n.c.created_at.desc(), n.c.notice_id).limit(limit)).mappings().all()
    return [_notice(r) for r in rows]


def my_notices(conn: Connection, viewer: Viewer, *, limit: int = 50, unread_only: bool = False,
               everywhere: bool = False) -> list[dict]:
    """Notices naming the viewer among their recipients, newest first, each marked read or not.

    Recipients are team members of the notice's key account, except the fallback assignee of a key
    account without a KAM: `everywhere` looks beyond the viewer's own key accounts for that one.
    """
    from services.web.tables import web_notice_reads as r

    n = t.notices
    conditions = [n.c.recipients.like(f"%{_like_escape(_json_text(viewer.person_id))}%", escape="\\")]
    if not everywhere:
        if not viewer.key_accounts:
            return []
        conditions.append(n.c.key_account_id.in_(sorted(viewer.key_accounts)))
    if unread_only:
        conditions.append(r.c.notice_id.is_(None))
    rows = conn.execute(select(n, r.c.read_at)
                        .select_from(n.outerjoin(r, and_(r.c.notice_id == n.c.notice_id,
                                                         r.c.person_id == viewer.person_id)))
                        .where(*conditions).order_by(n.c.created_at.desc(), n.c.notice_id).limit(limit)).mappings().all()
    return [_notice(row) | {"read": row["read_at"] is not None} for row in rows]


def notice(conn: Connection, notice_id: str) -> dict | None:
    row = conn.execute(select(t.notices).where(t.notices.c.notice_id == notice_id)).mappings().first()
    return _notice(row) if row else None


def _notice(row) -> dict:
    out = {k: row[k] for k in ("notice_id", "kind", "key_account_id", "account_id", "about", "title", "detail",
                               "caused_by", "created_at")}
    out["recipients"] = json.loads(row["recipients"])
    return out


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection whose statements all see the store as of one instant.

    The pipeline commits an alert's new status and the decision's outcome together; read in two
    statements under READ COMMITTED, a page could show the outcome "applied" beside the old status.
    PostgreSQL's REPEATABLE READ gives one snapshot for the whole read; a SQLite read transaction is one.
    """
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn

"""Read-only views of the alerts for the command line (`onevoice alerts`)."""

from __future__ import annotations

import json

from sqlalchemy import Engine, select

from services.domain import CLOSED_STATUSES
from services.store import tables as t

ALERT_FIELDS = ("alert_id", "fingerprint", "rule", "severity", "status", "key_account_id", "account_id", "title",
                "detail", "evidence", "assignee", "recipients", "due_at", "caused_by", "created_at", "updated_at",
                "data")


def list_alerts(engine: Engine, *, open_only: bool = False, assignee: str | None = None,
                key_account: str | None = None, limit: int = 200) -> list[dict]:
    """Alerts as their last kam.alerts message showed them, newest change first."""
    a = t.alerts.c
    query = select(*(a[name] for name in ALERT_FIELDS)).order_by(a.updated_at.desc(), a.alert_id).limit(limit)
    if open_only:
        query = query.where(a.status.not_in(list(CLOSED_STATUSES)))
    if assignee:
        query = query.where(a.assignee == assignee)
    if key_account:
        query = query.where(a.key_account_id == key_account)
    with engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(query)]
    for row in rows:
        for name in ("evidence", "recipients", "data"):
            row[name] = json.loads(row[name]) if row[name] else ([] if name != "data" else {})
    return rows

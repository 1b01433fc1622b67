"""Alerts and their history written straight into a store, for the KPI report's tests."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

from services.domain import iso
from services.store import tables as t

RULES = ("local_price_below_global", "key_account_dunning", "scarce_stock_allocation", "unauthorized_commitment",
         "contradicting_service_terms", "promotion_undercuts_global", "duplicate_global_contract")


def alert_row(alert_id: str, rule: str, severity: str, key_account: str, assignee: str, created: datetime,
              status: str) -> dict:
    return {"alert_id": alert_id, "fingerprint": f"{rule}:{key_account}:{alert_id}", "rule": rule,
            "severity": severity, "status": status, "key_account_id": key_account, "account_id": key_account,
            "title": f"{rule} at {key_account}", "detail": "", "evidence": json.dumps([alert_id]),
            "assignee": assignee, "recipients": json.dumps([assignee]), "due_at": None,
            "caused_by": f"test/{alert_id}", "created_at": iso(created), "updated_at": iso(created), "data": "{}",
            "versions": "", "closed_by_decision": False, "escalated": False, "awaiting_decision": False,
            "ref_id": None}


def history_row(alert_id: str, status: str, assignee: str, at: datetime, decided_by: str | None = None) -> dict:
    return {"alert_id": alert_id, "status": status, "assignee": assignee, "caused_by": f"test/{alert_id}/{status}",
            "decided_by": decided_by, "comment": None, "at": iso(at)}


def write(engine, alerts: list[dict], history: list[dict]) -> None:
    with engine.begin() as conn:
        for start in range(0, len(alerts), 5000):
            conn.execute(t.alerts.insert(), alerts[start:start + 5000])
        for start in range(0, len(history), 5000):
            conn.execute(t.alert_history.insert(), history[start:start + 5000])


def workload(n: int, *, end: datetime, weeks: int = 12, seed: int = 7) -> tuple[list[dict], list[dict]]:
    """`n` alerts opened over `weeks` weeks before `end`, over 40 KAMs and 800 key accounts, most of them
    acknowledged and decided within hours to days, some escalated, some still open."""
    rng = random.Random(seed)
    alerts, history = [], []
    span = weeks * 7 * 86400
    for i in range(n):
        alert_id = f"a{i:07d}"
        rule = rng.choice(RULES)
        kam = f"kam-{rng.randrange(40):02d}"
        key_account = f"KA-{rng.randrange(800):04d}"
        severity = rng.choice(("high", "medium", "low", "critical"))
        opened = end - timedelta(seconds=rng.uniform(0, span))
        history.append(history_row(alert_id, "open", kam, opened))
        status, at = "open", opened
        if rng.random() < 0.15:
            at = at + timedelta(hours=48)
            if at < end:
                status = "escalated"
                history.append(history_row(alert_id, "escalated", "senior-kam", at))
        if rng.random() < 0.8:
            at = at + timedelta(hours=rng.expovariate(1 / 6))
            if at < end:
                status = "acknowledged"
                history.append(history_row(alert_id, status, kam, at, decided_by=kam))
                at = at + timedelta(hours=rng.expovariate(1 / 24))
                if at < end and rng.random() < 0.85:
                    status = rng.choice(("resolved", "waived"))
                    history.append(history_row(alert_id, status, kam, at, decided_by=kam))
        elif rng.random() < 0.5:
            at = at + timedelta(hours=rng.uniform(1, 100))
            if at < end:
                status = "resolved"
                history.append(history_row(alert_id, status, kam, at))
        alerts.append(alert_row(alert_id, rule, severity, key_account, kam, opened, status))
    return alerts, history


UTC = timezone.utc

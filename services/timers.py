"""Durable escalation: alerts nobody decided in time are re-published to the next person up.

Timers are rows (`alerts.due_at`), not in-memory callbacks, so they survive restarts; the
key-account lock plus the `escalated` flag make every alert escalate exactly once even
when several processes look at the same due alerts.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pydantic_core import from_json
from sqlalchemy import Engine, and_, or_, select

from services.config import Settings
from services.domain import iso, utcnow
from services.outputs import alert_message
from services.routing import escalation_target
from services.store import tables as t
from services.store.db import lock_keys
from services.store.state import StateRepository, add_to_counters, dumps


def _due(now_iso: str):
    c = t.alerts.c
    return and_(c.escalated == False, c.due_at.is_not(None), c.due_at <= now_iso,  # noqa: E712
                or_(c.status == "open", and_(c.awaiting_decision == True, c.status == "acknowledged")))  # noqa: E712


class EscalationTimer:
    def __init__(self, engine: Engine, settings: Settings, *, clock: Callable[[], datetime] = utcnow,
                 instance: str = "local"):
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.instance = instance

    def escalate_due(self, limit: int = 500) -> int:
        """Escalate every alert due by now; returns how many this call escalated."""
        now = self.clock()
        now_iso = iso(now)
        with self.engine.begin() as conn:
            candidates = conn.execute(select(t.alerts.c.alert_id, t.alerts.c.key_account_id)
                                      .where(_due(now_iso)).limit(limit)).all()
            if not candidates:
                return 0
            lock_keys(conn, {c.key_account_id for c in candidates})
            rows = conn.execute(select(t.alerts).where(
                t.alerts.c.alert_id.in_([c.alert_id for c in candidates]), _due(now_iso))).all()
            repo = StateRepository(conn)
            teams = repo.teams({r.key_account_id for r in rows})
            outbox, history = [], []
            for row in rows:
                target = escalation_target(teams[row.key_account_id], row.assignee, self.settings.fallback_assignee)
                # CONTRACT §5: recipients are the assignee plus others, so the new assignee joins them
                recipients = dumps(sorted({*from_json(row.recipients), target}))
                values = dict(row._mapping, status="escalated", escalated=True, assignee=target, updated_at=now_iso,
                              caused_by=f"onevoice/escalation/{row.alert_id}", recipients=recipients)
                repo.put(t.alerts, values)
                history.append({"alert_id": row.alert_id, "status": "escalated", "assignee": target,
                                "caused_by": values["caused_by"], "decided_by": None, "comment": None, "at": now_iso})
                outbox.append({"topic": "kam.alerts", "key": target, "value": dumps(alert_message(values)),
                               "created_at": now_iso})
            repo.flush()
            if outbox:
                conn.execute(t.outbox.insert(), outbox)
                conn.execute(t.alert_history.insert(), history)
                add_to_counters(conn, self.instance, {"escalations": len(outbox)})
            # A new version of each key account: processes that cached its conflict alerts read them again.
            repo.bump_keys({row.key_account_id for row in rows})
            repo.read_returned()
            return len(outbox)

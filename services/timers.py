"""Durable escalation: alerts nobody decided in time are re-published to the next person up.

Timers are rows (`alerts.due_at`), not in-memory callbacks, so they survive restarts; the
key-account lock plus the `escalated` flag make every alert escalate exactly once even
when several processes look at the same due alerts.
"""

from __future__ import annotations

from pydantic_core import from_json
from sqlalchemy import and_, or_, select

from services.domain import iso
from services.batch import Batch, StoreWriter
from services.routing import escalation_target
from services.store import tables as t
from services.store.db import lock_keys
from services.store.state import StateRepository, dumps


def due_condition(now_iso: str):
    """Alerts whose escalation is due by `now_iso` (CONTRACT §5): still open, or a held dunning not yet decided."""
    c = t.alerts.c
    return and_(c.escalated == False, c.due_at.is_not(None), c.due_at <= now_iso,  # noqa: E712
                or_(c.status == "open", and_(c.awaiting_decision == True, c.status == "acknowledged")))  # noqa: E712


class EscalationTimer(StoreWriter):
    def escalate_due(self, limit: int = 500) -> int:
        """Escalate every alert due by now; returns how many this call escalated."""
        now = self.clock()
        now_iso = iso(now)
        with self.engine.begin() as conn:
            candidates = conn.execute(select(t.alerts.c.alert_id, t.alerts.c.key_account_id)
                                      .where(due_condition(now_iso)).limit(limit)).all()
            if not candidates:
                return 0
            batch = Batch(StateRepository(conn), now, self.settings.decision_window_s)
            batch.locked = {c.key_account_id for c in candidates}  # committing bumps them: caches read again
            lock_keys(conn, batch.locked)
            rows = conn.execute(select(t.alerts).where(
                t.alerts.c.alert_id.in_([c.alert_id for c in candidates]), due_condition(now_iso))).all()
            teams = batch.repo.teams({r.key_account_id for r in rows})
            for row in rows:
                target = escalation_target(teams[row.key_account_id], row.assignee, self.settings.fallback_assignee)
                # CONTRACT §5: recipients are the assignee plus others, so the new assignee joins them
                recipients = dumps(sorted({*from_json(row.recipients), target}))
                batch.change_status(dict(row._mapping), "escalated", f"onevoice/escalation/{row.alert_id}",
                                    escalated=True, assignee=target, recipients=recipients)
            batch.result.escalations = len(rows)
            batch.commit(self.instance)
            return len(rows)

"""The report's raw material: the alerts of the period with the milestones of their history, in one query."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import NamedTuple

from sqlalchemy import Engine, text


@dataclass(frozen=True)
class Period:
    """Whole UTC days from `start` to `end`, both included."""

    start: date
    end: date

    @property
    def begins(self) -> datetime:
        return datetime.combine(self.start, time.min, timezone.utc)

    @property
    def ends(self) -> datetime:  # exclusive
        return datetime.combine(self.end + timedelta(days=1), time.min, timezone.utc)


class AlertFacts(NamedTuple):
    """One alert as the report sees it: who it was first given to, and when it reached each milestone."""

    alert_id: str
    rule: str
    severity: str
    key_account_id: str
    kam: str  # the assignee it was opened for: the person measured, even if it was escalated later
    opened: datetime
    acknowledged: datetime | None  # the first decision of any kind (acknowledge, resolve, waive, release, proceed)
    decided: datetime | None  # the first decision that closed it (resolve, waive, release, proceed)
    escalated: datetime | None
    closed: datetime | None  # by a decision or automatically


# Milestones per alert, aggregated by the database (times are RFC 3339 UTC text of one fixed format,
# so the smallest text is the earliest time); the first assignee is the one of the `open` row.
_FACTS_SQL = text("""
SELECT a.alert_id, a.rule, a.severity, a.key_account_id, COALESCE(h.first_assignee, a.assignee), a.created_at,
       h.acknowledged, h.decided, h.escalated, h.closed
FROM alerts a LEFT JOIN (
    SELECT alert_id,
           MIN(CASE WHEN status = 'open' THEN assignee END) AS first_assignee,
           MIN(CASE WHEN decided_by IS NOT NULL THEN at END) AS acknowledged,
           MIN(CASE WHEN decided_by IS NOT NULL AND status IN ('resolved', 'waived') THEN at END) AS decided,
           MIN(CASE WHEN status = 'escalated' THEN at END) AS escalated,
           MIN(CASE WHEN status IN ('resolved', 'waived') THEN at END) AS closed
    FROM alert_history WHERE at < :ends GROUP BY alert_id
) h ON h.alert_id = a.alert_id
WHERE a.created_at < :ends AND (a.created_at >= :begins OR h.closed IS NULL OR h.closed >= :begins)
""")


def load_alert_facts(engine: Engine, period: Period) -> list[AlertFacts]:
    """Alerts opened during the period, and those opened before it that were still open when it began.

    The first are measured; the others count in the backlog. One query: the database aggregates
    the history per alert, Python only parses the times.
    """
    with engine.connect() as conn:
        rows = conn.execute(_FACTS_SQL, {"begins": _iso(period.begins), "ends": _iso(period.ends)}).all()
    parse = datetime.fromisoformat
    return [AlertFacts(alert_id, rule, severity, key_account, kam, parse(created),
                       parse(ack) if ack else None, parse(decided) if decided else None,
                       parse(escalated) if escalated else None, parse(closed) if closed else None)
            for alert_id, rule, severity, key_account, kam, created, ack, decided, escalated, closed in rows]


def _iso(moment: datetime) -> str:
    """Midnight without a zone suffix: sorts before every stored time of that second (`…T00:00:00Z`,
    `…T00:00:00.5Z`) and after every time of the day before."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S")

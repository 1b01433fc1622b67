"""What the store says about the service's health: backlog of the outbox, open and overdue alerts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, select, text

from services.domain import CLOSED_STATUSES, iso
from services.store import tables as t
from services.timers import due_condition as escalation_due  # the timer's own condition: one definition of "due"


@dataclass(frozen=True)
class StoreHealth:
    open_alerts: int
    escalated_open: int
    escalations_due: int
    outbox_pending: int
    outbox_oldest_age_s: float  # 0 when nothing waits


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def read_store_health(engine: Engine, now: datetime) -> StoreHealth:
    """A handful of counts; the outbox ones go through its partial index of unsent rows."""
    a = t.alerts.c
    with engine.connect() as conn:
        by_status = dict(conn.execute(select(a.status, func.count()).where(a.status.not_in(list(CLOSED_STATUSES)))
                                      .group_by(a.status)).all())
        due = conn.execute(select(func.count()).select_from(t.alerts).where(escalation_due(iso(now)))).scalar()
        pending = conn.execute(select(func.count()).select_from(t.outbox)
                               .where(t.outbox.c.sent_at.is_(None))).scalar()
        oldest = conn.execute(select(t.outbox.c.created_at).where(t.outbox.c.sent_at.is_(None))
                              .order_by(t.outbox.c.id).limit(1)).scalar()
    age = max(0.0, (now - parse_time(oldest)).total_seconds()) if oldest else 0.0
    return StoreHealth(open_alerts=int(sum(by_status.values())), escalated_open=int(by_status.get("escalated", 0)),
                       escalations_due=int(due or 0), outbox_pending=int(pending or 0), outbox_oldest_age_s=age)


def store_reachable(engine: Engine) -> None:
    """Raises unless the store answers a trivial query (a new connection if the pool's one was dropped)."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


INSTANCE_PREFIX = "ops:"  # store_meta rows: what each running process last reported about itself
FORGET_INSTANCES_AFTER_S = 86400


def record_instance(engine: Engine, instance: str, report: dict, now: datetime) -> None:
    """Leave this process's latest ops report in the store, for `onevoice status` (one row per process).

    Written every ops interval, not per batch; reports older than a day (processes long gone) are dropped.
    """
    import json

    from services.store.db import insert_stmt

    name = (INSTANCE_PREFIX + instance)[:64]
    value = json.dumps({**report, "instance": instance, "seen_at": iso(now)})
    with engine.begin() as conn:
        stmt = insert_stmt(conn, t.store_meta).values(name=name, value=value)
        conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"value": stmt.excluded.value}))
        rows = conn.execute(select(t.store_meta.c.name, t.store_meta.c.value)
                            .where(t.store_meta.c.name.like(INSTANCE_PREFIX + "%"))).all()
        stale = [row.name for row in rows if _seen_before(row.value, now, FORGET_INSTANCES_AFTER_S)]
        if stale:
            conn.execute(t.store_meta.delete().where(t.store_meta.c.name.in_(stale)))


def read_instances(engine: Engine) -> list[dict]:
    """The latest report of every process that ran against this store in the last day, newest first."""
    import json

    with engine.connect() as conn:
        rows = conn.execute(select(t.store_meta.c.value).where(t.store_meta.c.name.like(INSTANCE_PREFIX + "%"))).all()
    reports = [json.loads(row.value) for row in rows]
    return sorted(reports, key=lambda r: r.get("seen_at", ""), reverse=True)


def _seen_before(value: str, now: datetime, seconds: float) -> bool:
    import json

    try:
        return (now - parse_time(json.loads(value)["seen_at"])).total_seconds() > seconds
    except (ValueError, KeyError, TypeError):
        return True


def schema_revision(engine: Engine) -> tuple[str | None, str]:
    """(the store's migration revision, the newest this onevoice knows)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from services.store.db import alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, head


def require_current_schema(engine: Engine, url: str) -> None:
    """Raise `SchemaMismatch` unless the store is migrated to exactly this onevoice's newest revision."""
    from services.observability.errors import SchemaMismatch

    current, head = schema_revision(engine)
    if current != head:
        raise SchemaMismatch(url, current, head)

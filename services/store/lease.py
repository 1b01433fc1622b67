"""A lease in the database: one holder at a time across processes, on PostgreSQL and SQLite alike.

A holder that dies simply stops renewing; another process takes over once it expires.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, or_, update

from services.domain import iso
from services.store import tables as t
from services.store.db import insert_stmt


def hold_lease(engine: Engine, name: str, owner: str, now: datetime, ttl_s: float) -> bool:
    """Take or renew the lease; True while `owner` holds it."""
    expires = iso(now + timedelta(seconds=ttl_s))
    with engine.begin() as conn:
        conn.execute(insert_stmt(conn, t.leases).values(name=name, owner=owner, expires_at=expires)
                     .on_conflict_do_nothing())
        taken = conn.execute(update(t.leases).where(
            t.leases.c.name == name, or_(t.leases.c.owner == owner, t.leases.c.expires_at < iso(now)))
            .values(owner=owner, expires_at=expires))
        return taken.rowcount == 1


def release_lease(engine: Engine, name: str, owner: str) -> None:
    with engine.begin() as conn:
        conn.execute(t.leases.delete().where(t.leases.c.name == name, t.leases.c.owner == owner))

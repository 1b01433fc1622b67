"""Read and unread notices, per person: the only notice state the inbox writes (web_notice_reads)."""

from __future__ import annotations

from sqlalchemy import Engine

from services.store.db import insert_stmt
from services.web import queries
from services.web.queries import Viewer
from services.web.tables import web_notice_reads
from services.web.tokens import now_iso


def mark_read(engine: Engine, viewer: Viewer, notice_id: str) -> dict | None:
    """Mark one notice read for the viewer; None when it does not exist or is not addressed to them."""
    with engine.begin() as conn:
        found = queries.notice(conn, notice_id)
        if found is None or viewer.person_id not in found["recipients"]:
            return None
        _insert(conn, [viewer.person_id], [notice_id])
    return dict(found, read=True)


def mark_all_read(engine: Engine, viewer: Viewer, *, everywhere: bool = False) -> int:
    """Mark every unread notice addressed to the viewer read; returns how many."""
    with engine.begin() as conn:
        unread = [n["notice_id"] for n in queries.my_notices(conn, viewer, limit=1000, unread_only=True,
                                                             everywhere=everywhere)]
        _insert(conn, [viewer.person_id] * len(unread), unread)
    return len(unread)


def _insert(conn, people: list[str], notice_ids: list[str]) -> None:
    if notice_ids:
        stamp = now_iso()
        conn.execute(insert_stmt(conn, web_notice_reads).on_conflict_do_nothing(),
                     [{"person_id": p, "notice_id": n, "read_at": stamp} for p, n in zip(people, notice_ids)])

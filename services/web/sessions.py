"""Browser sessions and the brake on guessing tokens, both in the store so every web process agrees.

A session cookie holds 32 random bytes; the store keeps its digest, the person, and the CSRF
token that every form of that session must carry. Revoking the token that opened a session
ends it (tokens.revoke_token); an expired token ends it too (checked on every request).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, func, select

from services.web.tables import web_failed_sign_ins, web_sessions, web_tokens
from services.web.tokens import Holder, digest, now_iso


def open_session(engine: Engine, holder: Holder, hours: float, now: datetime | None = None) -> tuple[str, str]:
    """A new session for `holder`: returns (cookie value, CSRF token)."""
    now = now or datetime.now(timezone.utc)
    cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    with engine.begin() as conn:
        conn.execute(web_sessions.delete().where(web_sessions.c.expires_at <= now_iso(now)))
        conn.execute(web_sessions.insert().values(digest=digest(cookie), person_id=holder.person_id,
                                                  admin=holder.admin, token_id=holder.token_id, csrf=csrf,
                                                  created_at=now_iso(now),
                                                  expires_at=now_iso(now + timedelta(hours=hours))))
    return cookie, csrf


def session_of(engine: Engine, cookie: str, now: datetime | None = None) -> tuple[Holder, str] | None:
    """(holder, CSRF token) of a live session, or None (unknown, expired, or its token revoked or expired)."""
    if not cookie or len(cookie) > 100:
        return None
    stamp = now_iso(now)
    query = (select(web_sessions, web_tokens.c.revoked_at, web_tokens.c.expires_at.label("token_expires_at"))
             .select_from(web_sessions.outerjoin(web_tokens, web_tokens.c.token_id == web_sessions.c.token_id))
             .where(web_sessions.c.digest == digest(cookie)))
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None or row.expires_at <= stamp or row.revoked_at is not None:
        return None
    if row.token_expires_at is not None and row.token_expires_at <= stamp:
        return None
    return Holder(row.person_id, bool(row.admin), row.token_id), row.csrf


def close_session(engine: Engine, cookie: str) -> None:
    with engine.begin() as conn:
        conn.execute(web_sessions.delete().where(web_sessions.c.digest == digest(cookie)))


def too_many_failures(engine: Engine, client: str, limit: int, window_s: float, now: datetime | None = None) -> bool:
    """Whether `client` failed `limit` sign-ins within the last `window_s` seconds."""
    now = now or datetime.now(timezone.utc)
    since = now_iso(now - timedelta(seconds=window_s))
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(web_failed_sign_ins).where(
            web_failed_sign_ins.c.client == client[:128], web_failed_sign_ins.c.at > since)).scalar()
    return count >= limit


def record_failure(engine: Engine, client: str, window_s: float, now: datetime | None = None) -> None:
    """Count one failed sign-in, and forget this client's failures older than the window."""
    now = now or datetime.now(timezone.utc)
    with engine.begin() as conn:
        conn.execute(web_failed_sign_ins.delete().where(
            web_failed_sign_ins.c.client == client[:128],
            web_failed_sign_ins.c.at <= now_iso(now - timedelta(seconds=window_s))))
        conn.execute(web_failed_sign_ins.insert().values(client=client[:128], at=now_iso(now)))

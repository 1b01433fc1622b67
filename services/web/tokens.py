"""Personal access tokens: made once, shown once, stored only as a digest.

A token reads `ov_<token id>_<secret>`: the id lets `onevoice token revoke` name it without the
secret, the secret (32 random bytes) makes guessing hopeless, so a plain SHA-256 digest is enough
to store it (a slow password hash protects guessable secrets, which these are not).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, select, update

from services.web.tables import web_sessions, web_tokens

PREFIX = "ov_"


@dataclass(frozen=True)
class Holder:
    """Who a token (or a session) signs in: a person id, and whether that person is an admin."""

    person_id: str
    admin: bool
    token_id: str | None = None


def now_iso(now: datetime | None = None) -> str:
    return (now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(engine: Engine, person_id: str, *, admin: bool = False, expires_days: float | None = None,
                 now: datetime | None = None) -> tuple[str, str]:
    """A new token for `person_id`: returns (token id, the token itself), the only time it exists in clear."""
    now = now or datetime.now(timezone.utc)
    token_id = secrets.token_hex(6)
    token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    expires = now_iso(now + timedelta(days=expires_days)) if expires_days is not None else None
    with engine.begin() as conn:
        conn.execute(web_tokens.insert().values(token_id=token_id, digest=digest(token), person_id=person_id,
                                                admin=admin, created_at=now_iso(now), expires_at=expires))
    return token_id, token


def holder_of(engine: Engine, token: str, now: datetime | None = None) -> Holder | None:
    """Whom a presented token signs in, or None when it is unknown, revoked or expired."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    stamp = now_iso(now)
    with engine.begin() as conn:
        row = conn.execute(select(web_tokens).where(web_tokens.c.digest == digest(token))).first()
        if row is None or row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= stamp):
            return None
        if row.last_used_at is None or row.last_used_at[:16] != stamp[:16]:  # at most one write a minute
            conn.execute(update(web_tokens).where(web_tokens.c.token_id == row.token_id).values(last_used_at=stamp))
    return Holder(row.person_id, bool(row.admin), row.token_id)


def list_tokens(engine: Engine, person_id: str | None = None) -> list[dict]:
    """Every token (never its secret), newest first."""
    query = select(web_tokens.c.token_id, web_tokens.c.person_id, web_tokens.c.admin, web_tokens.c.created_at,
                   web_tokens.c.expires_at, web_tokens.c.revoked_at, web_tokens.c.last_used_at)
    if person_id is not None:
        query = query.where(web_tokens.c.person_id == person_id)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query.order_by(web_tokens.c.created_at.desc()))]


def revoke_token(engine: Engine, token_id: str, now: datetime | None = None) -> bool:
    """Revoke a token and end the browser sessions it opened; False when there is no such live token."""
    with engine.begin() as conn:
        changed = conn.execute(update(web_tokens).where(web_tokens.c.token_id == token_id,
                                                        web_tokens.c.revoked_at.is_(None))
                               .values(revoked_at=now_iso(now))).rowcount
        conn.execute(web_sessions.delete().where(web_sessions.c.token_id == token_id))
    return bool(changed)

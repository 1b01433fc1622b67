"""Changing a person's notification preferences (validated here, stored in notify_preferences)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone

from sqlalchemy import Engine, select

from services.notify.deliveries import preference_of
from services.notify.policy import DEFAULT_PREFERENCE, SEVERITIES, Preference, iso
from services.notify.tables import notify_preferences
from services.store.db import insert_stmt


def set_preference(engine: Engine, person: str, *, channels: str | None = None, severities: str | None = None,
                   notices: bool | None = None, digest: bool | None = None, language: str | None = None,
                   email: str | None = None) -> Preference:
    with engine.begin() as conn:
        row = conn.execute(select(notify_preferences).where(notify_preferences.c.person_id == person)).first()
        pref = preference_of(row) if row else DEFAULT_PREFERENCE
        if channels is not None:
            chosen = tuple(c for c in _words(channels) if c != "none")
            if any(c != "email" for c in chosen):
                raise ValueError("channels: 'email' or 'none' (chat channels are per key account, not per person)")
            pref = replace(pref, channels=chosen)
        if severities is not None:
            chosen = tuple(s for s in SEVERITIES if s in _words(severities))
            if set(_words(severities)) - set(SEVERITIES) - {"none"}:
                raise ValueError(f"severities: some of {', '.join(SEVERITIES)}")
            pref = replace(pref, severities=chosen)
        if language is not None:
            if language not in ("en", "de"):
                raise ValueError("language: en or de")
            pref = replace(pref, language=language)
        if email is not None:
            if email and ("@" not in email or len(email) > 254):
                raise ValueError("email: an address like name@example.com")
            pref = replace(pref, email=email or None)
        if notices is not None:
            pref = replace(pref, notices=notices)
        if digest is not None:
            pref = replace(pref, digest=digest)
        values = {"person_id": person, "channels": json.dumps(list(pref.channels)),
                  "severities": json.dumps(list(pref.severities)), "notices": pref.notices, "digest": pref.digest,
                  "language": pref.language, "email": pref.email, "updated_at": iso(datetime.now(timezone.utc))}
        stmt = insert_stmt(conn, notify_preferences).values(values)
        conn.execute(stmt.on_conflict_do_update(index_elements=["person_id"],
                                                set_={k: stmt.excluded[k] for k in values if k != "person_id"}))
    return pref


def _words(text: str) -> list[str]:
    return [w.strip().lower() for w in text.replace(" ", ",").split(",") if w.strip()]

"""The inbox's own tables: access tokens, sign-in sessions, decisions sent, notices read, failed sign-ins.

The inbox never writes the pipeline's tables (alerts, history, outcomes, notices): these rows are
the only ones it owns. Migration 0009 creates them. Secrets (tokens, session cookies) are stored
only as SHA-256 digests: a leaked table lets nobody sign in.
"""

from __future__ import annotations

from sqlalchemy import Index
from sqlmodel import Field, SQLModel


class AccessTokenRow(SQLModel, table=True):
    """A personal access token: whose it is, whether it makes its holder an admin, until when it works."""

    __tablename__ = "web_tokens"
    token_id: str = Field(primary_key=True, max_length=32)
    digest: str = Field(max_length=64, unique=True)  # sha256 hex of the whole token
    person_id: str = Field(index=True, max_length=128)
    admin: bool = False
    created_at: str
    expires_at: str | None = None
    revoked_at: str | None = None
    last_used_at: str | None = None


class SessionRow(SQLModel, table=True):
    """A signed-in browser: the cookie's digest, the person, and the CSRF token its forms must carry."""

    __tablename__ = "web_sessions"
    digest: str = Field(primary_key=True, max_length=64)  # sha256 hex of the cookie value
    person_id: str = Field(max_length=128)
    admin: bool = False
    token_id: str | None = Field(default=None, index=True, max_length=32)  # None: signed in by the trusted header
    csrf: str = Field(max_length=64)
    created_at: str
    expires_at: str


class SentDecisionRow(SQLModel, table=True):
    """A decision this inbox published on kam.decisions; its outcome is the pipeline's decision_outcomes row."""

    __tablename__ = "web_decisions"
    __table_args__ = (Index("ix_web_decisions_alert", "alert_id", "sent_at"),)
    event_id: str = Field(primary_key=True, max_length=64)
    source: str = Field(max_length=300)
    alert_id: str = Field(max_length=128)
    decision: str = Field(max_length=16)
    decided_by: str = Field(max_length=128)
    comment: str | None = None
    sent_at: str


class NoticeReadRow(SQLModel, table=True):
    """That one person has read one notice (unread is the absence of a row)."""

    __tablename__ = "web_notice_reads"
    person_id: str = Field(primary_key=True, max_length=128)
    notice_id: str = Field(primary_key=True, max_length=64)
    read_at: str


class FailedSignInRow(SQLModel, table=True):
    """One failed sign-in (bad token) from one client, counted to slow down guessing across all web processes."""

    __tablename__ = "web_failed_sign_ins"
    __table_args__ = (Index("ix_web_failed_sign_ins_client_at", "client", "at"),)
    id: int | None = Field(default=None, primary_key=True)
    client: str = Field(max_length=128)
    at: str


web_tokens = AccessTokenRow.__table__
web_sessions = SessionRow.__table__
web_decisions = SentDecisionRow.__table__
web_notice_reads = NoticeReadRow.__table__
web_failed_sign_ins = FailedSignInRow.__table__


# The inbox's indexes on the pipeline's tables (migration 0009), declared here so that the models and
# the migrations agree; the urgency expressions are services/web/queries.py's, character for character.
from sqlalchemy import literal_column  # noqa: E402

from services.store import tables as _pipeline  # noqa: E402

Index("ix_alerts_assignee_status", _pipeline.alerts.c.assignee, _pipeline.alerts.c.status)
Index("ix_alerts_key_account_status", _pipeline.alerts.c.key_account_id, _pipeline.alerts.c.status)
Index("ix_alerts_urgency",
      literal_column("(CASE severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END)"),
      literal_column("(COALESCE(due_at, created_at))"), _pipeline.alerts.c.alert_id)
Index("ix_team_members_person_id", _pipeline.team_members.c.person_id)
Index("ix_notices_key_account_created", _pipeline.notices.c.key_account_id, _pipeline.notices.c.created_at)
Index("ix_notices_created_at", _pipeline.notices.c.created_at)

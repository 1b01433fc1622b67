"""The notification tables: the delivery log, what notify knows of each alert, and people's preferences.

Declared on the store's shared metadata (SQLModel) so the migration check sees them; created by
migration 0010.
"""

from __future__ import annotations

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel


class NotifyDeliveryRow(SQLModel, table=True):
    """One notification to one recipient on one channel: the unit that is sent once, retried, or failed.

    `(subject_id, status, recipient, channel)` is unique, so whichever process or restart records a
    notification again finds it there and sends nothing twice. subject_id/status are
    (alert id, alert status), (notice id, "notice"), (alert id, "reminder") or ("digest:<date>", "digest").
    """

    __tablename__ = "notify_deliveries"
    __table_args__ = (
        UniqueConstraint("subject_id", "status", "recipient", "channel", name="uq_notify_deliveries_key"),
        Index("ix_notify_deliveries_due", "state", "next_attempt_at"),
        Index("ix_notify_deliveries_recipient", "recipient", "created_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)  # alert | notice | reminder | digest
    subject_id: str = Field(max_length=128)
    status: str = Field(max_length=16)
    recipient: str = Field(max_length=160)  # person id, or "webhook:<channel key>"
    channel: str = Field(max_length=16)  # email | teams | slack | digest
    state: str = Field(max_length=16)  # pending | sent | failed | held (for the digest) | no_address
    severity: str | None = Field(default=None, max_length=16)
    key_account_id: str | None = Field(default=None, max_length=128)
    payload: str  # JSON: the alert or notice message, or the digest's period
    attempts: int = 0
    next_attempt_at: str
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: str | None = None
    last_error: str | None = None
    created_at: str
    sent_at: str | None = None


class NotifyAlertRow(SQLModel, table=True):
    """The newest state of each alert as seen on kam.alerts: what the digest lists and reminders watch."""

    __tablename__ = "notify_alerts"
    __table_args__ = (Index("ix_notify_alerts_remind", "remind_at"),)
    alert_id: str = Field(primary_key=True, max_length=64)
    status: str = Field(max_length=16)
    severity: str = Field(max_length=16)
    key_account_id: str = Field(max_length=128)
    assignee: str = Field(max_length=128)
    recipients: str  # JSON list
    version_key: str = Field(max_length=40)  # updated_at (fixed width) + status rank: newest wins, in SQL too
    payload: str  # JSON: the newest kam.alerts message
    remind_at: str | None = None  # halfway to due_at for high/critical alerts, until reminded
    reminded: bool = False


class NotifyPreferenceRow(SQLModel, table=True):
    """How one person wants to be told (`onevoice notify prefs …`); people without a row get the defaults."""

    __tablename__ = "notify_preferences"
    person_id: str = Field(primary_key=True, max_length=128)
    channels: str  # JSON list: "email" for immediate mail, empty for the digest only
    severities: str  # JSON list of severities mailed at once; others wait for the digest
    notices: bool = False  # notices mailed at once too (else in the digest)
    digest: bool = True
    language: str | None = Field(default=None, max_length=8)
    email: str | None = Field(default=None, max_length=254)  # overrides the team's address (e.g. a desk)
    updated_at: str


notify_deliveries = NotifyDeliveryRow.__table__
notify_alerts = NotifyAlertRow.__table__
notify_preferences = NotifyPreferenceRow.__table__

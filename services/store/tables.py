"""The durable state of onevoice as SQLModel tables, one place for the whole schema.

Times are stored as RFC 3339 UTC strings (`...Z`) and dates as `YYYY-MM-DD`: both sort
as text, read back the same on SQLite and PostgreSQL, and never lose their offset.
Money is stored as the decimal string it arrived as.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, text
from sqlmodel import Field, SQLModel


class ProcessedEvent(SQLModel, table=True):
    """Every input already applied, by CloudEvents `(source, id)` (or Kafka coordinates for dead letters)."""

    __tablename__ = "processed_events"
    source: str = Field(primary_key=True, max_length=300)
    event_id: str = Field(primary_key=True, max_length=300)
    digest: str | None = Field(default=None, max_length=64)  # of type, time and data: same id, other content?


class AccountRow(SQLModel, table=True):
    __tablename__ = "accounts"
    account_id: str = Field(primary_key=True, max_length=128)
    name: str
    parent_id: str | None = Field(default=None, index=True, max_length=128)
    country: str = Field(index=True, max_length=2)
    tier: str
    root_id: str = Field(index=True, max_length=128)
    event_time: str
    event_id: str


class TeamMemberRow(SQLModel, table=True):
    """One assignment as last stated (present or removed), on the account the event named."""

    __tablename__ = "team_members"
    account_id: str = Field(primary_key=True, max_length=128)
    person_id: str = Field(primary_key=True, max_length=128)
    role: str = Field(primary_key=True, max_length=32)
    country: str | None = None
    name: str | None = None
    email: str | None = None
    present: bool = True
    event_time: str
    event_id: str


class AgreementRow(SQLModel, table=True):
    """The current (highest) version of each agreement; a withdrawal keeps the withdrawn terms."""

    __tablename__ = "agreements"
    agreement_id: str = Field(primary_key=True, max_length=128)
    version: int
    kind: str
    account_id: str | None = Field(default=None, index=True, max_length=128)
    agreed_by: str | None = None
    valid_from: str | None = None
    valid_to: str | None = None
    scope: str | None = None
    country: str | None = None
    product_id: str | None = Field(default=None, index=True, max_length=128)
    price: str | None = None
    currency: str | None = None
    contract_type: str | None = None
    status: str | None = None
    service_id: str | None = None
    charge: str | None = None


class PromotionRow(SQLModel, table=True):
    __tablename__ = "promotions"
    __table_args__ = (Index("ix_promotions_country_product", "country", "product_id"),)
    promotion_id: str = Field(primary_key=True, max_length=128)
    country: str
    product_id: str
    price: str
    currency: str
    valid_from: str
    valid_to: str
    audience: str
    launched_by: str
    event_time: str
    event_id: str


class AlertRow(SQLModel, table=True):
    __tablename__ = "alerts"
    __table_args__ = (
        Index("uq_alerts_open_fingerprint", "fingerprint", unique=True,
              postgresql_where=text("status NOT IN ('resolved', 'waived')"),
              sqlite_where=text("status NOT IN ('resolved', 'waived')")),
        Index("ix_alerts_due", "due_at", postgresql_where=text("escalated = false AND due_at IS NOT NULL"),
              sqlite_where=text("escalated = 0 AND due_at IS NOT NULL")),
    )
    alert_id: str = Field(primary_key=True, max_length=64)
    fingerprint: str  # compared in Python; uq_alerts_open_fingerprint keeps one open alert per fingerprint
    rule: str
    severity: str
    status: str
    key_account_id: str = Field(max_length=128)  # indexed with status (ix_alerts_key_account_status)
    account_id: str
    title: str
    detail: str
    evidence: str  # JSON list
    assignee: str
    recipients: str  # JSON list
    due_at: str | None = None
    caused_by: str
    created_at: str
    updated_at: str
    data: str  # JSON object
    versions: str = ""
    closed_by_decision: bool = False
    escalated: bool = False
    awaiting_decision: bool = False  # a dunning on hold, not yet released or let proceed
    ref_id: str | None = Field(default=None, index=True, max_length=128)


class ShortageRow(SQLModel, table=True):
    """The newest shortage seen per item, so an older one arriving late cannot reopen alerts."""

    __tablename__ = "shortages"
    item_id: str = Field(primary_key=True, max_length=128)
    event_time: str
    event_id: str


class OutboxRow(SQLModel, table=True):
    """Output messages written in the same transaction as the state change that caused them."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_unsent", "id", postgresql_where=text("sent_at IS NULL"), sqlite_where=text("sent_at IS NULL")),
        # Ids are never reused, also after every row was deleted (published or pruned): migration 0013.
        {"sqlite_autoincrement": True},
    )
    id: int | None = Field(default=None, primary_key=True)
    topic: str
    key: str | None = None
    value: str
    created_at: str
    sent_at: str | None = None
    # Set (with sent_at) when the broker refuses the output as too large: set aside, it blocks nothing (0011).
    undeliverable: str | None = None


class CounterRow(SQLModel, table=True):
    """Ops counters, one row per process instance so instances never contend on a hot row."""

    __tablename__ = "counters"
    instance: str = Field(primary_key=True, max_length=64)
    name: str = Field(primary_key=True, max_length=64)
    value: int = 0


metadata = SQLModel.metadata
processed_events = ProcessedEvent.__table__
accounts = AccountRow.__table__
team_members = TeamMemberRow.__table__
agreements = AgreementRow.__table__
promotions = PromotionRow.__table__
alerts = AlertRow.__table__
shortages = ShortageRow.__table__
outbox = OutboxRow.__table__
counters = CounterRow.__table__


class LeaseRow(SQLModel, table=True):
    """A named lease that one process holds at a time (the outbox relay), taken over when it expires."""

    __tablename__ = "leases"
    name: str = Field(primary_key=True, max_length=64)
    owner: str
    expires_at: str


leases = LeaseRow.__table__


class AlertEvidenceRow(SQLModel, table=True):
    """Which agreements and promotions an alert rests on, so a change finds its alerts by index."""

    __tablename__ = "alert_evidence"
    alert_id: str = Field(primary_key=True, max_length=64)
    evidence_id: str = Field(primary_key=True, index=True, max_length=128)


alert_evidence = AlertEvidenceRow.__table__


class RelayPositionRow(SQLModel, table=True):
    """Per output partition, the offset after the last message this store's relay knows it published."""

    __tablename__ = "relay_positions"
    topic: str = Field(primary_key=True, max_length=255)
    partition: int = Field(primary_key=True)
    next_offset: int = Field(sa_type=BigInteger)


class StoreMetaRow(SQLModel, table=True):
    """Facts about this store itself, such as the id that marks its messages on Kafka."""

    __tablename__ = "store_meta"
    name: str = Field(primary_key=True, max_length=64)
    value: str


relay_positions = RelayPositionRow.__table__
store_meta = StoreMetaRow.__table__


class VersionRow(SQLModel, table=True):
    """Counters bumped by every transaction that changes a kind of data, so processes can trust their caches."""

    __tablename__ = "versions"
    name: str = Field(primary_key=True, max_length=64)
    value: int = Field(sa_type=BigInteger, default=0)


versions = VersionRow.__table__


class KeyVersionRow(SQLModel, table=True):
    """A counter per lock key (key account, stock item), bumped by every transaction that held its lock.

    A process that finds a key at the version it last committed knows nobody changed that key's
    state since, so it may keep what it cached of it across transactions.
    """

    __tablename__ = "key_versions"
    key: str = Field(primary_key=True, max_length=160)
    version: int = Field(sa_type=BigInteger, default=0)


key_versions = KeyVersionRow.__table__


class AlertHistoryRow(SQLModel, table=True):
    """Every status change of an alert, as published: the inbox shows it, the KPI report measures it."""

    __tablename__ = "alert_history"
    id: int | None = Field(default=None, primary_key=True)
    alert_id: str = Field(index=True, max_length=64)
    status: str
    assignee: str
    caused_by: str
    decided_by: str | None = None
    comment: str | None = None
    at: str


class DecisionOutcomeRow(SQLModel, table=True):
    """What became of each `decision.made`: applied, or rejected with the dead-letter code (the inbox polls it)."""

    __tablename__ = "decision_outcomes"
    source: str = Field(primary_key=True, max_length=300)
    event_id: str = Field(primary_key=True, max_length=300)
    alert_id: str = Field(max_length=300)
    decision: str
    decided_by: str
    status: str  # applied | rejected
    code: str | None = None
    message: str | None = None
    at: str


class NoticeRow(SQLModel, table=True):
    """Every notice sent on kam.notices, so the inbox and the digest can show it again."""

    __tablename__ = "notices"
    notice_id: str = Field(primary_key=True, max_length=64)
    kind: str
    key_account_id: str = Field(max_length=128)  # indexed with created_at (ix_notices_key_account_created)
    account_id: str
    about: str
    recipients: str  # JSON list
    title: str
    detail: str
    caused_by: str
    created_at: str


alert_history = AlertHistoryRow.__table__
decision_outcomes = DecisionOutcomeRow.__table__
notices = NoticeRow.__table__

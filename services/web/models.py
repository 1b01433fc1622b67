"""JSON shapes of the inbox API (/api/v1), built on the contract's own output models (schemas/outputs.py).

An alert is exactly a kam.alerts message (AlertMessage); its detail adds what the inbox knows
beside it. A notice is a kam.notices message plus whether the reader has read it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from schemas.decisions import Decision
from schemas.outputs import AlertMessage, NoticeMessage
from schemas.types import AwareDatetime


class AlertList(BaseModel):
    items: list[AlertMessage]
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page; null on the last page")


class HistoryEntry(BaseModel):
    at: str
    status: str
    assignee: str
    assignee_name: str | None = None
    decided_by: str | None = None
    decided_by_name: str | None = None
    caused_by: str = Field(description='"<source>/<id>" of the event that caused this status')
    comment: str | None = None


class EvidenceItem(BaseModel):
    id: str
    kind: Literal["agreement", "promotion", "dunning", "shortage", "account", "unknown"]
    facts: dict[str, Any]


class InstructionFacts(BaseModel):
    """The instruction finance/ERP received for this alert's case (kam.instructions), as the alert records it."""

    kind: Literal["dunning", "allocation"]
    ref_id: str | None
    action: str
    account_id: str | None = None
    decided_by: str | None = None
    comment: str | None = None
    allocation: list[dict[str, Any]] = Field(default_factory=list)


class SentDecision(BaseModel):
    event_id: str
    decision: str
    decided_by: str
    comment: str | None = None
    sent_at: str
    status: Literal["pending", "applied", "rejected"]
    error: dict[str, str | None] | None = None


class AlertDetail(AlertMessage):
    """The alert (every field of its kam.alerts message) and what the inbox shows beside it."""

    key_account_name: str | None = None
    history: list[HistoryEntry]
    evidence_facts: list[EvidenceItem]
    instruction: InstructionFacts | None = None
    allowed_decisions: list[Decision] = Field(description="what the signed-in person may decide now (CONTRACT §5)")
    escalates_at: AwareDatetime | None = Field(None, description="when the alert escalates if nobody decides; null if it won't")
    decisions: list[SentDecision] = Field(default_factory=list, description="decisions sent through the inbox")
    names: dict[str, str] = Field(default_factory=dict, description="display names of the people named here")


class DecisionRequest(BaseModel):
    decision: Decision
    comment: str | None = Field(None, max_length=2000)


class DecisionAccepted(BaseModel):
    event_id: str
    status: Literal["pending"] = "pending"


class DecisionError(BaseModel):
    code: str
    message: str | None = None


class DecisionStatus(BaseModel):
    event_id: str
    alert_id: str
    decision: str
    status: Literal["pending", "applied", "rejected"]
    error: DecisionError | None = None


class Role(BaseModel):
    role: str
    country: str | None = None


class MyKeyAccount(BaseModel):
    key_account_id: str
    name: str | None = None
    roles: list[Role]


class Me(BaseModel):
    person_id: str
    name: str | None = None
    admin: bool
    key_accounts: list[MyKeyAccount]


class AccountNode(BaseModel):
    account_id: str
    name: str
    parent_id: str | None = None
    country: str
    tier: str
    depth: int


class TeamMemberOut(BaseModel):
    person_id: str
    name: str | None = None
    email: str | None = None
    role: str
    country: str | None = None


class NoticeItem(NoticeMessage):
    read: bool | None = Field(None, description="whether the signed-in person has read it (null: not addressed to them)")


class KeyAccountDetail(BaseModel):
    key_account_id: str
    name: str
    country: str
    tier: str
    hierarchy: list[AccountNode]
    team: list[TeamMemberOut]
    active_agreements: list[dict[str, Any]]
    open_alerts: list[AlertMessage]
    recent_notices: list[NoticeItem]


class NoticeList(BaseModel):
    items: list[NoticeItem]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, bool] = Field(default_factory=dict)

"""Messages onevoice publishes (CONTRACT §6).

Datetimes are timezone-aware, held in UTC and written as RFC 3339 with ``Z``.
Serialise with ``model.model_dump_json()`` / ``model_dump(mode="json")``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .base import OutputModel
from .types import AwareDatetime, NonNegativeQty

__all__ = [
    "RuleName",
    "Severity",
    "AlertStatus",
    "OPEN_STATUSES",
    "CLOSED_STATUSES",
    "InstructionKind",
    "InstructionAction",
    "DeadLetterCode",
    "AlertMessage",
    "AllocationLine",
    "InstructionMessage",
    "DeadLetterError",
    "DeadLetter",
    "OpsSnapshot",
    "as_text",
    "dead_letter",
]

RuleName = Literal[
    "duplicate_global_contract",
    "local_price_below_global",
    "local_price_above_global",
    "promotion_undercuts_global",
    "contradicting_service_terms",
    "unauthorized_commitment",
    "key_account_dunning",
    "scarce_stock_allocation",
]
Severity = Literal["low", "medium", "high", "critical"]
AlertStatus = Literal["open", "acknowledged", "escalated", "resolved", "waived"]
#: statuses of an alert that still counts as open (CONTRACT §5: "not resolved/waived")
OPEN_STATUSES: frozenset[str] = frozenset({"open", "acknowledged", "escalated"})
CLOSED_STATUSES: frozenset[str] = frozenset({"resolved", "waived"})
InstructionKind = Literal["dunning", "allocation"]
InstructionAction = Literal["proceed", "hold", "release", "allocate"]
DeadLetterCode = Literal[
    "invalid_json",
    "invalid_envelope",
    "unknown_type",
    "invalid_data",
    "too_large",
    "unknown_alert",
    "invalid_decision",
    "unauthorized_decision",
]


class AlertMessage(OutputModel):
    """``kam.alerts`` (key: ``assignee``): one message per status change of an alert."""

    alert_id: str
    fingerprint: str
    rule: RuleName
    severity: Severity
    status: AlertStatus
    key_account_id: str
    account_id: str
    title: str
    detail: str
    evidence: list[str]
    assignee: str
    recipients: list[str]
    due_at: AwareDatetime | None = None
    caused_by: str = Field(description='"<source>/<id>" of the event that caused this status')
    created_at: AwareDatetime
    updated_at: AwareDatetime
    data: dict[str, Any] = Field(default_factory=dict)


class AllocationLine(OutputModel):
    """What one order gets of a scarce item."""

    order_id: str
    qty: NonNegativeQty


class InstructionMessage(OutputModel):
    """``kam.instructions`` (key: ``ref_id``): for finance/ERP systems."""

    instruction_id: str
    kind: InstructionKind
    ref_id: str = Field(description="dunning_id (kind dunning) or item_id (kind allocation)")
    action: InstructionAction
    account_id: str | None = None
    key_account_id: str | None = None
    allocation: list[AllocationLine] = Field(
        default_factory=list, description="one line per order in rank order (allocate); empty otherwise"
    )
    reason: str
    alert_id: str | None = None
    decided_by: str | None = None
    created_at: AwareDatetime


class DeadLetterError(OutputModel):
    code: DeadLetterCode
    message: str


class DeadLetter(OutputModel):
    """``kam.dlq`` (key: the original key): a message that could not be used."""

    topic: str
    partition: int
    offset: int
    key: str | None = None
    raw: str | None = Field(description="the original value as text (invalid UTF-8 replaced)")
    error: DeadLetterError
    received_at: AwareDatetime
    raw_truncated: bool = Field(False, description="raw holds only the first 256 KiB of an oversized value")
    raw_bytes: int | None = Field(None, description="size of the original value when raw was truncated")


class OpsSnapshot(OutputModel):
    """``kam.ops``: metrics snapshot, at least every 10 s."""

    at: AwareDatetime
    processed: NonNegativeQty = Field(description="events processed")
    duplicates: NonNegativeQty = Field(description="duplicate deliveries skipped")
    stale: NonNegativeQty = Field(description="stale agreement versions ignored")
    dead_letters: NonNegativeQty = Field(description="messages sent to kam.dlq")
    open_alerts: NonNegativeQty = Field(description="alerts not resolved or waived")
    escalations: NonNegativeQty = Field(description="alerts escalated")
    consumer_lag: NonNegativeQty | None = Field(
        default=None, description="sum of lag over the assigned input partitions; null if unknown"
    )
    unknown_accounts: NonNegativeQty = Field(description="events naming accounts never upserted")
    instance: str = Field(description="which onevoice process sent this snapshot")
    outbox_pending: NonNegativeQty = Field(0, description="outputs committed but not yet published")


def as_text(value: bytes | bytearray | memoryview | str | None) -> str | None:
    """A Kafka key or value as text for a dead letter (invalid UTF-8 replaced by U+FFFD)."""
    if value is None or isinstance(value, str):
        return value
    return bytes(value).decode("utf-8", errors="replace")


def dead_letter(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | str | None,
    value: bytes | str | None,
    code: DeadLetterCode,
    message: str,
    received_at: Any,
) -> DeadLetter:
    """Build the ``kam.dlq`` message for a consumed record (raw bytes accepted)."""
    return DeadLetter(
        topic=topic,
        partition=partition,
        offset=offset,
        key=as_text(key),
        raw=as_text(value),
        error=DeadLetterError(code=code, message=message),
        received_at=received_at,
    )

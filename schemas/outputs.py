"""Messages onevoice publishes (CONTRACT §6).

Datetimes are timezone-aware, held in UTC and written as RFC 3339 with ``Z``.
Serialise with ``model.model_dump_json()`` / ``model_dump(mode="json")``.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
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
    "NoticeKind",
    "NoticeMessage",
    "as_text",
    "dead_letter",
    "dead_letter_value",
    "DLQ_RAW_LIMIT",
    "DLQ_KEY_LIMIT",
    "OUTPUT_VALUE_LIMIT",
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
    "key_account_handover",
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
    "wrong_topic",
    "duplicate_conflict",
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


NoticeKind = Literal["commitment_made", "key_account_promoted", "key_account_demoted"]


class NoticeMessage(OutputModel):
    """``kam.notices`` (key: ``key_account_id``): information that needs no decision (CONTRACT §5, §6)."""

    notice_id: str = Field(description="derived from (kind, caused_by, about): the same whichever process sends it")
    kind: NoticeKind
    key_account_id: str
    account_id: str
    about: str = Field(description="agreement id (commitment_made) or account id (promotion, demotion)")
    recipients: list[str]
    title: str
    detail: str
    caused_by: str = Field(description='"<source>/<id>" of the event that caused this notice')
    created_at: AwareDatetime


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
    undeliverable: NonNegativeQty = Field(0, description="outputs set aside because the broker refuses them as "
                                                         "too large (outbox.undeliverable)")


#: A dead letter keeps at most this much of the value and of the key (CONTRACT §6), so it fits 1 MiB.
DLQ_RAW_LIMIT = 256 * 1024
DLQ_KEY_LIMIT = 1024
#: The broker's default message limit (1 MiB) that every output must fit (CONTRACT §6), less headroom
#: for the record's key, headers and framing.
OUTPUT_VALUE_LIMIT = 1024 * 1024 - 16 * 1024


def as_text(value: bytes | bytearray | memoryview | str | None, limit: int | None = None) -> str | None:
    """A Kafka key or value as text for a dead letter (invalid UTF-8 replaced by U+FFFD), cut to `limit` bytes."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogatepass")
    value = bytes(value)
    if limit is not None and len(value) > limit:
        value = value[:limit]
    return value.decode("utf-8", errors="replace")


def dead_letter_value(*, topic: str, partition: int, offset: int, key: bytes | str | None,
                      value: bytes | str | None, code: str, message: str, received_at: str) -> dict[str, Any]:
    """The ``kam.dlq`` message as a plain dict: raw cut to its first 256 KiB, key to its first 1 KiB.

    A value cut in the middle of a UTF-8 character ends in U+FFFD; a raw value full of control
    characters (six bytes each in JSON) still fits the 1 MiB limit: 256 KiB × 6 = 1.5 MiB would
    not, so such a raw is cut further until its JSON text takes at most 512 KiB.
    """
    raw_bytes = len(value) if isinstance(value, (bytes, bytearray, memoryview)) else len(
        value.encode("utf-8", "surrogatepass")) if value is not None else 0
    raw = as_text(value, DLQ_RAW_LIMIT)
    truncated = raw_bytes > DLQ_RAW_LIMIT
    if raw is not None:
        while len(orjson.dumps(raw)) > DLQ_RAW_LIMIT * 2:
            raw, truncated = raw[: len(raw) // 2], True
    letter: dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset,
                              "key": as_text(key, DLQ_KEY_LIMIT), "raw": raw,
                              "error": {"code": code, "message": message}, "received_at": received_at}
    if truncated:
        letter["raw_truncated"] = True
        letter["raw_bytes"] = raw_bytes
    return letter


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
    """Build the ``kam.dlq`` message for a consumed record (raw bytes accepted), as a validated model."""
    if not isinstance(received_at, str):
        received_at = received_at.isoformat()
    return DeadLetter.model_validate(dead_letter_value(topic=topic, partition=partition, offset=offset, key=key,
                                                       value=value, code=code, message=message,
                                                       received_at=received_at))

"""Output messages of CONTRACT §6: field names, enums, UTC datetimes with Z."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from schemas import AlertMessage, DeadLetter, InstructionMessage, OpsSnapshot, dead_letter

T = datetime(2027, 1, 10, 10, 0, tzinfo=timezone(timedelta(hours=1)))


def _alert(**changes):
    fields = dict(
        alert_id="al-1", fingerprint="unauthorized_commitment:ACME:OK-1", rule="unauthorized_commitment",
        severity="medium", status="open", key_account_id="ACME", account_id="ACME", title="t", detail="d",
        evidence=["OK-1"], assignee="p-anna", recipients=["p-anna"], due_at=None, caused_by="erp/test/e16",
        created_at=T, updated_at=T,
    )  # fmt: skip
    fields.update(changes)
    return AlertMessage(**fields)


def test_alert_serialises_utc_with_z_and_round_trips():
    alert = _alert(due_at=T + timedelta(hours=48))
    doc = json.loads(alert.model_dump_json())
    assert doc["created_at"] == "2027-01-10T09:00:00Z"
    assert doc["due_at"] == "2027-01-12T09:00:00Z"
    assert doc["data"] == {}
    assert AlertMessage.model_validate_json(alert.model_dump_json()) == alert


@pytest.mark.parametrize(
    "changes",
    [{"status": "closed"}, {"severity": "urgent"}, {"rule": "nope"}, {"created_at": datetime(2027, 1, 1)}],
    ids=["status", "severity", "rule", "naive-datetime"],
)
def test_alert_rejects_values_outside_the_contract(changes):
    with pytest.raises(ValidationError):
        _alert(**changes)


def test_instruction_defaults_and_allocation():
    hold = InstructionMessage(
        instruction_id="i-1", kind="dunning", ref_id="D-1", action="hold", account_id="ACME-IT",
        key_account_id="ACME", reason="key account", created_at=T,
    )  # fmt: skip
    doc = json.loads(hold.model_dump_json())
    assert doc["allocation"] == [] and doc["alert_id"] is None and doc["decided_by"] is None
    allocate = InstructionMessage(
        instruction_id="i-2", kind="allocation", ref_id="ITEM-1", action="allocate",
        allocation=[{"order_id": "O-1", "qty": 5}, {"order_id": "O-2", "qty": 0}], reason="r", created_at=T,
    )  # fmt: skip
    assert [(line.order_id, line.qty) for line in allocate.allocation] == [("O-1", 5), ("O-2", 0)]
    with pytest.raises(ValidationError):
        InstructionMessage(instruction_id="i", kind="dunning", ref_id="D", action="wait", reason="r", created_at=T)


def test_dead_letter_from_raw_bytes():
    letter = dead_letter(
        topic="erp.agreements", partition=3, offset=42, key=b"x", value=b"\xffnot json",
        code="invalid_json", message="not UTF-8", received_at=T,
    )  # fmt: skip
    doc = json.loads(letter.model_dump_json())
    assert {"topic", "partition", "offset", "key", "raw", "error", "received_at"} <= set(doc)
    assert doc["raw"] == "\ufffdnot json"
    assert doc["error"] == {"code": "invalid_json", "message": "not UTF-8"}
    assert DeadLetter.model_validate_json(letter.model_dump_json()) == letter


def test_ops_snapshot_fields():
    snap = OpsSnapshot(
        at=T, processed=10, duplicates=1, stale=2, dead_letters=3, open_alerts=4, escalations=0,
        consumer_lag=7, unknown_accounts=1, instance="host-1",
    )  # fmt: skip
    doc = json.loads(snap.model_dump_json())
    assert doc["at"] == "2027-01-10T09:00:00Z"
    assert list(doc) == [
        "at", "processed", "duplicates", "stale", "dead_letters", "open_alerts", "escalations",
        "consumer_lag", "unknown_accounts", "instance", "outbox_pending", "undeliverable",
    ]  # fmt: skip

"""Valid sample events of every type, for the schema tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

SCENARIOS_DIR = Path(__file__).resolve().parents[3] / "shared" / "scenarios"

SAMPLE_DATA: dict[str, dict[str, Any]] = {
    "account.upserted": {
        "account_id": "ACME-IT",
        "name": "ACME Italia S.p.A.",
        "parent_id": "ACME",
        "country": "IT",
        "tier": "none",
    },
    "team.member_assigned": {
        "account_id": "ACME",
        "person_id": "p-anna",
        "role": "global_kam",
        "name": "Anna",
        "email": "anna@example.com",
        "country": "DE",
    },
    "team.member_removed": {"account_id": "ACME", "person_id": "p-anna", "role": "global_kam"},
    "price.agreed": {
        "agreement_id": "PA-1",
        "version": 1,
        "account_id": "ACME-IT",
        "scope": "local",
        "country": "IT",
        "product_id": "P-1",
        "price": "12.50",
        "currency": "EUR",
        "valid_from": "2027-01-01",
        "valid_to": "2027-12-31",
        "agreed_by": "p-carla",
    },
    "contract.negotiated": {
        "agreement_id": "C-1",
        "version": 2,
        "account_id": "ACME",
        "scope": "global",
        "country": None,
        "contract_type": "supply",
        "status": "signed",
        "valid_from": "2027-01-01",
        "valid_to": None,
        "agreed_by": "p-anna",
        "region": "EMEA",
    },
    "service.agreed": {
        "agreement_id": "S-1",
        "version": 1,
        "account_id": "ACME",
        "service_id": "onsite-support",
        "charge": "paid",
        "price": "100",
        "currency": "EUR",
        "valid_from": "2027-01-01",
        "agreed_by": "p-anna",
    },
    "agreement.withdrawn": {"agreement_id": "PA-1", "version": 3, "withdrawn_by": "p-anna"},
    "promotion.launched": {
        "promotion_id": "PROMO-1",
        "country": "IT",
        "product_id": "P-1",
        "price": "9.99",
        "currency": "EUR",
        "valid_from": "2027-03-01",
        "valid_to": "2027-03-01",
        "audience": "all_customers",
        "launched_by": "p-mkt",
    },
    "dunning.triggered": {
        "dunning_id": "D-1",
        "account_id": "ACME-IT",
        "invoice_id": "INV-1",
        "level": 2,
        "amount": "1200.00",
        "currency": "EUR",
        "due_date": "2027-02-28",
        "proposed_action": "delivery_block",
    },
    "stock.shortage": {
        "item_id": "ITEM-1",
        "available_qty": 0,
        "orders": [
            {"order_id": "O-1", "account_id": "ACME-IT", "qty": 5, "ordered_at": "2027-01-10T09:00:00Z"},
            {"order_id": "O-2", "account_id": "SMALL", "qty": 1, "ordered_at": "2027-01-10T10:00:00+01:00"},
        ],
    },
    "decision.made": {"alert_id": "al-1", "decision": "acknowledge", "decided_by": "p-anna", "comment": None},
}


_SAMPLE: Any = object()


def envelope(event_type: str, data: Any = _SAMPLE, **overrides: Any) -> dict[str, Any]:
    event = {
        "specversion": "1.0",
        "id": f"evt-{event_type}",
        "source": "test/unit",
        "type": event_type,
        "time": "2027-01-10T09:00:00Z",
        "subject": "ACME",
        "data": copy.deepcopy(SAMPLE_DATA[event_type]) if data is _SAMPLE else data,
    }
    event.update(overrides)
    return event


def event_with(event_type: str, **data_changes: Any) -> dict[str, Any]:
    """A valid event of ``event_type`` with some data fields changed (``...`` removes one)."""
    data = copy.deepcopy(SAMPLE_DATA[event_type])
    for name, value in data_changes.items():
        if value is ...:
            data.pop(name, None)
        else:
            data[name] = value
    return envelope(event_type, data)


def encode(obj: Any) -> bytes:
    return json.dumps(obj).encode("utf-8")


def binary(event: dict[str, Any], content_type: str | None = "application/json") -> tuple[list[tuple[str, bytes]], bytes]:
    """``(headers, value)`` of an event in binary content mode (CONTRACT §2), written by hand: every
    attribute but ``data`` as a ``ce_`` header (strings as they are, others as JSON), ``data`` as the value.
    (tests/unit/test_schemas_binary.py also writes them with the official CloudEvents SDK.)"""
    headers = [(f"ce_{name}", (value if isinstance(value, str) else json.dumps(value)).encode("utf-8"))
               for name, value in event.items() if name != "data" and value is not None]
    if content_type is not None:
        headers.append(("content-type", content_type.encode("utf-8")))
    return headers, json.dumps(event["data"]).encode("utf-8")


def binary_with(event_type: str, *, drop: tuple[str, ...] = (), **header_changes: bytes | None) -> tuple[list, bytes]:
    """Binary-mode headers and value of the sample event, with headers dropped or replaced (by name)."""
    headers, value = binary(envelope(event_type))
    headers = [(name, raw) for name, raw in headers if name not in drop and name not in header_changes]
    headers += [(name, raw) for name, raw in header_changes.items()]
    return headers, value

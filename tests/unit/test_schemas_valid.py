"""Every event of the shared scenarios decodes; their raw messages get the expected codes."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from schemas import EVENT_MODELS, TOPIC_BY_TYPE, InvalidMessage, decode_event
from schemas.agreements import PriceAgreed
from schemas.stock import StockShortage

from .schema_samples import SAMPLE_DATA, SCENARIOS_DIR, encode, envelope

DECODE_CODES = {"invalid_json", "invalid_envelope", "unknown_type", "invalid_data", "too_large"}

needs_scenarios = pytest.mark.skipif(
    not SCENARIOS_DIR.is_dir(), reason=f"shared scenarios not found at {SCENARIOS_DIR}"
)


def _scenario_messages():
    if not SCENARIOS_DIR.is_dir():
        return []
    items = []
    for path in sorted(SCENARIOS_DIR.glob("*.json")):
        scenario = json.loads(path.read_text(encoding="utf-8"))
        for step in scenario["steps"]:
            for n, item in enumerate(step.get("publish", [])):
                items.append((path.stem, n, item))
    return items


def _decode_all(items):
    codes: Counter[str] = Counter()
    for _, _, item in items:
        raw = encode(item["value"]) if "value" in item else item["raw"].encode("utf-8")
        try:
            event = decode_event(raw)
        except InvalidMessage as exc:
            codes[exc.code] += 1
        else:
            assert TOPIC_BY_TYPE[event.type] == item["topic"], "event published on the topic of its type"
    return codes


@needs_scenarios
@pytest.mark.parametrize("path", sorted(SCENARIOS_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_scenario_dead_letters_match_expected_decode_codes(path):
    scenario = json.loads(path.read_text(encoding="utf-8"))
    items = [(path.stem, 0, item) for step in scenario["steps"] for item in step.get("publish", [])]
    expected = {code: n for code, n in scenario["expect"].get("dlq", {}).items() if code in DECODE_CODES}
    assert dict(_decode_all(items)) == expected


@needs_scenarios
def test_every_scenario_value_decodes_except_the_expected_bad_ones():
    items = _scenario_messages()
    assert items, "no scenario messages found"
    values = [item for item in items if "value" in item[2]]
    bad = []
    for name, n, item in values:
        try:
            decode_event(encode(item["value"]))
        except InvalidMessage as exc:
            bad.append((name, exc.code))
    # bad-input's three invalid_data events are the only well-formed JSON values that must fail
    assert bad == [("bad-input", "invalid_data")] * 3


@needs_scenarios
def test_bad_input_messages_and_their_codes():
    scenario = json.loads((SCENARIOS_DIR / "bad-input.json").read_text(encoding="utf-8"))
    raw = [item["raw"] for step in scenario["steps"] for item in step.get("publish", []) if "raw" in item]
    codes = []
    for text in raw:
        with pytest.raises(InvalidMessage) as info:
            decode_event(text.encode("utf-8"))
        codes.append(info.value.code)
    assert codes == ["invalid_json", "invalid_envelope", "invalid_envelope", "unknown_type", "too_large"]


@pytest.mark.parametrize("event_type", sorted(EVENT_MODELS))
def test_sample_of_every_type_decodes_to_its_model(event_type):
    event = decode_event(encode(envelope(event_type)))
    assert isinstance(event.data, EVENT_MODELS[event_type])
    assert event.type == event_type
    assert event.key == ("test/unit", f"evt-{event_type}")
    assert event.ref == f"test/unit/evt-{event_type}"
    assert event.time == datetime(2027, 1, 10, 9, tzinfo=timezone.utc)
    assert event.topic == TOPIC_BY_TYPE[event_type]


def test_typed_values():
    event = decode_event(encode(envelope("price.agreed")))
    data = event.data
    assert isinstance(data, PriceAgreed)
    assert data.price == Decimal("12.50") and isinstance(data.price, Decimal)
    assert data.valid_from == date(2027, 1, 1)
    assert event.kafka_key == "PA-1"


def test_time_with_offset_is_normalised_to_utc():
    event = decode_event(encode(envelope("decision.made", time="2027-01-10T10:30:00.5+01:30")))
    assert event.time == datetime(2027, 1, 10, 9, 0, 0, 500000, tzinfo=timezone.utc)
    assert event.time.utcoffset().total_seconds() == 0


def test_optional_fields_may_be_missing_or_null():
    minimal = {"account_id": "A", "person_id": "p", "role": "sales"}
    assert decode_event(encode(envelope("team.member_assigned", minimal))).data.country is None
    nulls = dict(minimal, name=None, email=None, country=None)
    assert decode_event(encode(envelope("team.member_assigned", nulls))).data.name is None


def test_unknown_fields_and_extension_attributes_are_ignored():
    data = dict(SAMPLE_DATA["decision.made"], future_field={"x": [1, 2]})
    event = decode_event(encode(envelope("decision.made", data, traceparent="00-abc", partitionkey="k")))
    assert not hasattr(event.data, "future_field")


def test_free_service_and_empty_shortage_and_equal_validity_are_valid():
    free = dict(SAMPLE_DATA["service.agreed"], charge="free", price=None, currency=None)
    assert decode_event(encode(envelope("service.agreed", free))).data.charge == "free"
    empty = {"item_id": "I", "available_qty": 3, "orders": []}
    shortage = decode_event(encode(envelope("stock.shortage", empty))).data
    assert isinstance(shortage, StockShortage) and not shortage.is_shortage


def test_models_are_frozen():
    event = decode_event(encode(envelope("decision.made")))
    with pytest.raises(Exception):
        event.data.decision = "waive"  # type: ignore[misc]
    with pytest.raises(Exception):
        event.envelope.id = "other"  # type: ignore[misc]


def test_invalid_message_carries_code_and_short_message():
    with pytest.raises(InvalidMessage) as info:
        decode_event(encode(envelope("price.agreed", dict(SAMPLE_DATA["price.agreed"], currency="eur"))))
    assert info.value.code == "invalid_data"
    assert info.value.message.startswith("data.currency")
    assert len(info.value.message) <= 300

"""Property tests: decode_event never fails except with InvalidMessage; valid events round-trip."""

from __future__ import annotations

import json
import os
import string
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import EVENT_MODELS, Event, InvalidMessage, decode_event
from schemas.export import ENVELOPE_MODELS

from .schema_samples import SAMPLE_DATA, encode, envelope

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decode_or_invalid(value):
    try:
        result = decode_event(value)
    except InvalidMessage as exc:
        assert exc.code in {"invalid_json", "invalid_envelope", "unknown_type", "invalid_data", "too_large"}
        assert isinstance(exc.message, str) and exc.message
        return None
    assert isinstance(result, Event)
    return result


json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


@FUZZ
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(value):
    _decode_or_invalid(value)


@FUZZ
@given(json_values)
def test_arbitrary_json(value):
    _decode_or_invalid(json.dumps(value).encode())


def _with_one_field_replaced(event_type: str, data, values, extra_fields: tuple[str, ...] = ()) -> dict:
    """A valid event of `event_type` with one envelope or `data` field (or one of `extra_fields`) set to a drawn value."""
    event = envelope(event_type)
    where = data.draw(st.sampled_from(["envelope", "data"]))
    target = event if where == "envelope" else event["data"]
    field = data.draw(st.sampled_from(sorted(target) + list(extra_fields)))
    target[field] = data.draw(values)
    return event


@FUZZ
@given(st.sampled_from(sorted(EVENT_MODELS)), st.data())
def test_valid_event_with_one_field_replaced(event_type, data):
    _decode_or_invalid(encode(_with_one_field_replaced(event_type, data, json_values)))


@FUZZ
@given(st.sampled_from(sorted(EVENT_MODELS)), st.integers(min_value=0), st.binary(min_size=1, max_size=4))
def test_valid_event_with_bytes_spliced_in(event_type, position, chunk):
    value = bytearray(encode(envelope(event_type)))
    position %= len(value)
    value[position : position + len(chunk)] = chunk
    _decode_or_invalid(bytes(value))


# --- generated valid events round-trip ----------------------------------------------------

ids = st.text(alphabet=string.ascii_letters + string.digits + "-_/.:é", min_size=1, max_size=128)
money = st.decimals(min_value=0, max_value=Decimal("1e12"), places=2, allow_nan=False, allow_infinity=False).map(
    lambda d: format(d, "f")
)
currency = st.text(alphabet=string.ascii_uppercase, min_size=3, max_size=3)
country = st.text(alphabet=string.ascii_uppercase, min_size=2, max_size=2)
dates = st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 12, 31))
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
datetimes = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=offsets).map(
    lambda d: d.isoformat()
)
positive = st.integers(min_value=1, max_value=2**63 - 1)


@st.composite
def validity(draw, required_to=False):
    start = draw(dates)
    end = draw(st.one_of(st.just(None), dates)) if not required_to else draw(dates)
    if end is not None and end < start:
        start, end = end, start
    return start.isoformat(), None if end is None else end.isoformat()


@st.composite
def price_agreed(draw):
    scope = draw(st.sampled_from(["global", "local"]))
    valid_from, valid_to = draw(validity())
    return {
        "agreement_id": draw(ids),
        "version": draw(positive),
        "account_id": draw(ids),
        "scope": scope,
        "country": draw(country) if scope == "local" else None,
        "product_id": draw(ids),
        "price": draw(money),
        "currency": draw(currency),
        "valid_from": valid_from,
        "valid_to": valid_to,
        "agreed_by": draw(ids),
    }


@st.composite
def service_agreed(draw):
    charge = draw(st.sampled_from(["paid", "free"]))
    valid_from, valid_to = draw(validity())
    return {
        "agreement_id": draw(ids),
        "version": draw(positive),
        "account_id": draw(ids),
        "service_id": draw(ids),
        "charge": charge,
        "price": draw(money) if charge == "paid" else None,
        "currency": draw(currency) if charge == "paid" else None,
        "valid_from": valid_from,
        "valid_to": valid_to,
        "agreed_by": draw(ids),
    }


@st.composite
def stock_shortage(draw):
    order_ids = draw(st.lists(ids, unique=True, max_size=6))
    return {
        "item_id": draw(ids),
        "available_qty": draw(st.integers(min_value=0, max_value=10**6)),
        "orders": [
            {"order_id": o, "account_id": draw(ids), "qty": draw(positive), "ordered_at": draw(datetimes)}
            for o in order_ids
        ],
    }


@st.composite
def dunning(draw):
    return {
        "dunning_id": draw(ids),
        "account_id": draw(ids),
        "invoice_id": draw(ids),
        "level": draw(st.integers(min_value=1, max_value=4)),
        "amount": draw(money),
        "currency": draw(currency),
        "due_date": draw(dates).isoformat(),
        "proposed_action": draw(st.sampled_from(["reminder", "delivery_block", "collection"])),
    }


@st.composite
def promotion(draw):
    valid_from, valid_to = draw(validity(required_to=True))
    return dict(
        SAMPLE_DATA["promotion.launched"],
        promotion_id=draw(ids),
        country=draw(country),
        price=draw(money),
        valid_from=valid_from,
        valid_to=valid_to,
        audience=draw(st.sampled_from(["all_customers", "segment"])),
    )


GENERATED = st.one_of(
    price_agreed().map(lambda d: ("price.agreed", d)),
    service_agreed().map(lambda d: ("service.agreed", d)),
    stock_shortage().map(lambda d: ("stock.shortage", d)),
    dunning().map(lambda d: ("dunning.triggered", d)),
    promotion().map(lambda d: ("promotion.launched", d)),
)


@FUZZ
@given(GENERATED, ids, ids, datetimes)
def test_generated_valid_events_round_trip(typed, event_id, source, time):
    event_type, data = typed
    value = encode(envelope(event_type, data, id=event_id, source=source, time=time))
    event = decode_event(value)
    assert event.key == (source, event_id)
    assert event.time == datetime.fromisoformat(time)
    assert event.time.tzinfo is timezone.utc
    # JSON form of the typed data decodes to an equal model
    again = decode_event(encode(envelope(event_type, event.data.model_dump(mode="json"), time=time)))
    assert again.data == event.data
    # the full typed envelope of export.ENVELOPE_MODELS validates the same message
    typed_model = ENVELOPE_MODELS[event_type].model_validate(json.loads(value))
    assert typed_model.data == event.data


def _read(load, value):
    try:
        return ("ok", load(value))
    except InvalidMessage as exc:
        return ("invalid", exc.code, exc.message)


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True, default=repr) == json.dumps(b, sort_keys=True, default=repr)


_JSON_BYTES = (
    st.builds(lambda v, ascii_only: json.dumps(v, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"),
              json_values, st.booleans())
    | st.binary(max_size=60)
    | st.text(alphabet='{}[]",:0123456789.eE+-tfrulnasNIy \\\t\n/ud8dc', max_size=40).map(
        lambda t: t.encode("utf-8", "surrogatepass"))
)


@FUZZ
@given(_JSON_BYTES, st.integers(min_value=0, max_value=8), st.binary(max_size=3))
def test_the_fast_json_reader_agrees_with_the_exact_one(value, cut, splice):
    """The fast parser may only ever return what the standard library would (else its reading, or error, stands)."""
    from schemas.decode import _load_json, _load_json_exactly

    mutated = value[:len(value) - cut] + splice if cut else value
    for candidate in (value, mutated):
        if not candidate:
            continue
        fast, exact = _read(_load_json, candidate), _read(_load_json_exactly, candidate)
        assert fast[0] == exact[0], (candidate, fast, exact)
        assert _same(fast[1:], exact[1:]), (candidate, fast, exact)


# --- the one-pass reading of valid messages agrees with the exact path ------------------------------


def _outcome(decode, value):
    """What a decoder makes of a value, comparable across the two paths."""
    try:
        event = decode(value)
    except InvalidMessage as exc:
        return ("invalid", exc.code, exc.message)
    envelope = event.envelope
    return ("event", event.type, event.source, event.id, event.time, envelope.specversion, envelope.subject,
            envelope.datacontenttype, type(event.data), event.data.model_dump())


def _agrees_with_exact_path(value):
    from schemas.decode import _decode_exactly

    assert _outcome(decode_event, value) == _outcome(_decode_exactly, value), value


@FUZZ
@given(st.sampled_from(sorted(EVENT_MODELS)), st.data())
def test_one_pass_reading_agrees_with_the_exact_path_on_a_replaced_field(event_type, data):
    event = _with_one_field_replaced(event_type, data, json_values | st.sampled_from(["NaN", "\u0000", "\ud800", "é"]),
                                     extra_fields=("extension",))
    _agrees_with_exact_path(json.dumps(event, ensure_ascii=data.draw(st.booleans())).encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.sampled_from(sorted(EVENT_MODELS)), st.integers(min_value=0), _JSON_BYTES | st.sampled_from(
    [b"NaN", b"Infinity", b"-Infinity", b"1e999", b'"\\u0000"', b'"\\ud800"', b'"x", "type": "price.agreed"']))
def test_one_pass_reading_agrees_with_the_exact_path_on_spliced_bytes(event_type, position, chunk):
    value = bytearray(encode(envelope(event_type)))
    position %= len(value)
    value[position:position] = chunk
    _agrees_with_exact_path(bytes(value))


@FUZZ
@given(GENERATED, ids, ids, datetimes)
def test_one_pass_reading_agrees_with_the_exact_path_on_valid_events(typed, event_id, source, time):
    event_type, data = typed
    _agrees_with_exact_path(encode(envelope(event_type, data, id=event_id, source=source, time=time)))


def test_one_pass_reading_agrees_with_the_exact_path_on_the_hostile_corpus_and_samples():
    from .test_schemas_hostile import CASES, _value

    values = [_value(case) for _, case, _ in CASES]
    values += [encode(envelope(event_type)) for event_type in sorted(EVENT_MODELS)]
    values += [encode({**envelope("price.agreed"), "extension": float("nan")})]  # json.dumps writes NaN
    for value in values:
        _agrees_with_exact_path(value)

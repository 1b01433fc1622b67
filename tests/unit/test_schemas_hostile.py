"""A hostile corpus: each case must be rejected with exactly this dead-letter code."""

from __future__ import annotations

import json

import pytest

from schemas import MAX_MESSAGE_BYTES, InvalidMessage, decode_event

from .schema_samples import binary, binary_with, encode, envelope, event_with

E = envelope  # short names for the table below
W = event_with


def raw(text: str) -> bytes:
    return text.encode("utf-8")


def _without(key: str) -> dict:
    event = envelope("decision.made")
    del event[key]
    return event


def _deep(depth: int) -> bytes:
    return raw('{"specversion": "1.0", "data": ' + "[" * depth + "]" * depth + "}")


def _big() -> bytes:
    event = envelope("decision.made", dict(W("decision.made")["data"], comment="x" * MAX_MESSAGE_BYTES))
    return encode(event)


def _order(**changes):
    order = {"order_id": "O-1", "account_id": "A", "qty": 1, "ordered_at": "2027-01-10T09:00:00Z"}
    order.update(changes)
    return order


CASES: list[tuple[str, object, str]] = [
    # --- framing: bytes, UTF-8, JSON ---------------------------------------------------
    ("none", None, "invalid_json"),
    ("empty-bytes", b"", "invalid_json"),
    ("whitespace-only", b"   \n", "invalid_json"),
    ("not-json", b"this is not json", "invalid_json"),
    ("invalid-utf8", b'{"specversion": "1.0", "id": "\xff\xfe"}', "invalid_json"),
    ("utf16-encoded", json.dumps(envelope("decision.made")).encode("utf-16"), "invalid_json"),
    ("utf8-bom", b"\xef\xbb\xbf" + encode(envelope("decision.made")), "invalid_json"),
    ("truncated-json", encode(envelope("decision.made"))[:-5], "invalid_json"),
    ("trailing-garbage", encode(envelope("decision.made")) + b" x", "invalid_json"),
    ("two-documents", encode(envelope("decision.made")) * 2, "invalid_json"),
    ("nan-literal", raw(json.dumps(W("decision.made")).replace('"acknowledge"', "NaN")), "invalid_json"),
    ("infinity-literal", raw('{"specversion": "1.0", "x": -Infinity}'), "invalid_json"),
    ("deeply-nested", _deep(100_000), "invalid_json"),
    ("lone-surrogate", raw(json.dumps(W("decision.made", comment="a")).replace('"a"', '"\\ud800"')), "invalid_json"),
    ("nul-in-id", encode(envelope("decision.made", id="evt\u00001")), "invalid_json"),
    ("huge-int-digits", raw('{"specversion": "1.0", "v": ' + "9" * 5000 + "}"), "invalid_json"),
    ("too-large", _big(), "too_large"),
    ("too-large-garbage", b"\xff" * (MAX_MESSAGE_BYTES + 1), "too_large"),
    # --- envelope ---------------------------------------------------------------------
    ("array", raw("[1, 2, 3]"), "invalid_envelope"),
    ("json-string", raw('"price.agreed"'), "invalid_envelope"),
    ("json-null", raw("null"), "invalid_envelope"),
    ("json-number", raw("42"), "invalid_envelope"),
    ("empty-object", raw("{}"), "invalid_envelope"),
    ("missing-specversion", _without("specversion"), "invalid_envelope"),
    ("specversion-0.3", E("decision.made", specversion="0.3"), "invalid_envelope"),
    ("specversion-number", E("decision.made", specversion=1.0), "invalid_envelope"),
    ("missing-id", _without("id"), "invalid_envelope"),
    ("empty-id", E("decision.made", id=""), "invalid_envelope"),
    ("id-129-chars", E("decision.made", id="x" * 129), "invalid_envelope"),
    ("id-number", E("decision.made", id=17), "invalid_envelope"),
    ("missing-source", _without("source"), "invalid_envelope"),
    ("source-null", E("decision.made", source=None), "invalid_envelope"),
    ("missing-type", _without("type"), "invalid_envelope"),
    ("type-empty", E("decision.made", type=""), "invalid_envelope"),
    ("type-number", E("decision.made", type=3), "invalid_envelope"),
    ("missing-time", _without("time"), "invalid_envelope"),
    ("naive-time", E("decision.made", time="2027-01-10T09:00:00"), "invalid_envelope"),
    ("date-only-time", E("decision.made", time="2027-01-10"), "invalid_envelope"),
    ("time-space-separator", E("decision.made", time="2027-01-10 09:00:00Z"), "invalid_envelope"),
    ("time-epoch-number", E("decision.made", time=1799571600), "invalid_envelope"),
    ("time-hour-25", E("decision.made", time="2027-01-10T25:00:00Z"), "invalid_envelope"),
    ("time-feb-30", E("decision.made", time="2027-02-30T09:00:00Z"), "invalid_envelope"),
    ("missing-data", _without("data"), "invalid_envelope"),
    ("data-null", E("decision.made", data=None), "invalid_envelope"),
    ("data-array", E("decision.made", data=[]), "invalid_envelope"),
    ("data-string", E("decision.made", data='{"alert_id": "a"}'), "invalid_envelope"),
    ("subject-number", E("decision.made", subject=5), "invalid_envelope"),
    # --- type ---------------------------------------------------------------------------
    ("unknown-type", E("decision.made", type="price.haggled"), "unknown_type"),
    ("type-wrong-case", E("decision.made", type="Price.Agreed"), "unknown_type"),
    ("unknown-type-bad-data", E("decision.made", type="x.y", data={}), "unknown_type"),
    # --- data: generic types ------------------------------------------------------------
    ("data-empty", E("price.agreed", data={}), "invalid_data"),
    ("missing-required-field", W("price.agreed", agreed_by=...), "invalid_data"),
    ("required-field-null", W("price.agreed", product_id=None), "invalid_data"),
    ("id-empty", W("decision.made", alert_id=""), "invalid_data"),
    ("id-129-chars-in-data", W("decision.made", decided_by="p" * 129), "invalid_data"),
    ("id-number-in-data", W("decision.made", alert_id=12), "invalid_data"),
    ("id-array", W("decision.made", alert_id=["a"]), "invalid_data"),
    ("text-number", W("account.upserted", name=1), "invalid_data"),
    ("enum-unknown", W("decision.made", decision="approve"), "invalid_data"),
    ("enum-wrong-case", W("account.upserted", tier="KEY"), "invalid_data"),
    ("role-unknown", W("team.member_assigned", role="ceo"), "invalid_data"),
    # --- money --------------------------------------------------------------------------
    ("money-negative", W("price.agreed", price="-5.00"), "invalid_data"),
    ("money-number", W("price.agreed", price=12.5), "invalid_data"),
    ("money-int", W("price.agreed", price=12), "invalid_data"),
    ("money-exponent", W("price.agreed", price="1e3"), "invalid_data"),
    ("money-comma", W("price.agreed", price="12,50"), "invalid_data"),
    ("money-nan", W("price.agreed", price="NaN"), "invalid_data"),
    ("money-infinity", W("dunning.triggered", amount="Infinity"), "invalid_data"),
    ("money-empty", W("price.agreed", price=""), "invalid_data"),
    ("money-leading-plus", W("price.agreed", price="+1.00"), "invalid_data"),
    ("money-trailing-dot", W("price.agreed", price="1."), "invalid_data"),
    ("money-spaces", W("price.agreed", price=" 1.00"), "invalid_data"),
    ("money-arabic-digits", W("price.agreed", price="١٢"), "invalid_data"),
    ("money-16-digits-before-point", W("price.agreed", price="1234567890123456"), "invalid_data"),
    ("money-7-digits-after-point", W("price.agreed", price="1.1234567"), "invalid_data"),
    ("money-16-digits-leading-zeros", W("dunning.triggered", amount="0000000000000001.00"), "invalid_data"),
    ("money-huge-service-price", W("service.agreed", price="9" * 400), "invalid_data"),
    # --- text limits ---------------------------------------------------------------------
    ("account-name-201-chars", W("account.upserted", name="n" * 201), "invalid_data"),
    ("member-name-201-chars", W("team.member_assigned", name="é" * 201), "invalid_data"),
    ("email-255-chars", W("team.member_assigned", email="a" * 243 + "@example.com"), "invalid_data"),
    ("comment-2001-chars", W("decision.made", comment="c" * 2001), "invalid_data"),
    ("agreed-by-129-chars", W("price.agreed", agreed_by="p" * 129), "invalid_data"),
    ("order-id-129-chars", W("stock.shortage", orders=[_order(order_id="o" * 129)]), "invalid_data"),
    # --- currency / country -------------------------------------------------------------
    ("currency-lowercase", W("price.agreed", currency="eur"), "invalid_data"),
    ("currency-4-letters", W("price.agreed", currency="EURO"), "invalid_data"),
    ("currency-trailing-newline", W("price.agreed", currency="EUR\n"), "invalid_data"),
    ("country-lowercase", W("account.upserted", country="it"), "invalid_data"),
    ("country-3-letters", W("account.upserted", country="ITA"), "invalid_data"),
    # --- dates --------------------------------------------------------------------------
    ("date-feb-30", W("price.agreed", valid_from="2027-02-30"), "invalid_data"),
    ("date-not-leap", W("dunning.triggered", due_date="2027-02-29"), "invalid_data"),
    ("date-compact", W("price.agreed", valid_from="20270101"), "invalid_data"),
    ("date-with-time", W("price.agreed", valid_from="2027-01-01T00:00:00Z"), "invalid_data"),
    ("date-number", W("price.agreed", valid_from=20270101), "invalid_data"),
    ("date-one-digit-month", W("price.agreed", valid_from="2027-1-01"), "invalid_data"),
    ("valid-to-before-from", W("price.agreed", valid_from="2027-05-01", valid_to="2027-01-01"), "invalid_data"),
    ("promotion-without-valid-to", W("promotion.launched", valid_to=None), "invalid_data"),
    ("promotion-valid-to-before", W("promotion.launched", valid_to="2027-02-28"), "invalid_data"),
    # --- integers -----------------------------------------------------------------------
    ("version-zero", W("price.agreed", version=0), "invalid_data"),
    ("version-string", W("price.agreed", version="1"), "invalid_data"),
    ("version-bool", W("price.agreed", version=True), "invalid_data"),
    ("version-float", W("price.agreed", version=1.0), "invalid_data"),
    ("version-over-int64", W("agreement.withdrawn", version=2**63), "invalid_data"),
    ("level-0", W("dunning.triggered", level=0), "invalid_data"),
    ("level-5", W("dunning.triggered", level=5), "invalid_data"),
    ("level-bool", W("dunning.triggered", level=True), "invalid_data"),
    ("available-negative", W("stock.shortage", available_qty=-1), "invalid_data"),
    ("available-string", W("stock.shortage", available_qty="3"), "invalid_data"),
    # --- conditionals -------------------------------------------------------------------
    ("local-without-country", W("price.agreed", country=None), "invalid_data"),
    ("local-country-missing", W("price.agreed", country=...), "invalid_data"),
    ("global-with-country", W("contract.negotiated", country="DE"), "invalid_data"),
    ("scope-unknown", W("price.agreed", scope="regional"), "invalid_data"),
    ("paid-without-price", W("service.agreed", price=None), "invalid_data"),
    ("paid-without-currency", W("service.agreed", currency=...), "invalid_data"),
    ("free-with-price", W("service.agreed", charge="free", currency=None), "invalid_data"),
    ("free-with-currency", W("service.agreed", charge="free", price=None), "invalid_data"),
    # --- stock orders -------------------------------------------------------------------
    ("orders-missing", W("stock.shortage", orders=...), "invalid_data"),
    ("orders-object", W("stock.shortage", orders={"O-1": 1}), "invalid_data"),
    ("order-qty-zero", W("stock.shortage", orders=[_order(qty=0)]), "invalid_data"),
    ("order-qty-float", W("stock.shortage", orders=[_order(qty=1.5)]), "invalid_data"),
    ("order-naive-time", W("stock.shortage", orders=[_order(ordered_at="2027-01-10T09:00:00")]), "invalid_data"),
    ("order-not-object", W("stock.shortage", orders=["O-1"]), "invalid_data"),
    ("duplicate-order-ids", W("stock.shortage", orders=[_order(), _order(qty=2)]), "invalid_data"),
]


# Binary content mode (CONTRACT §2): (name, (headers, value), code). The headers of binary_with are the
# sample event's; drop= removes some, keywords replace them.
CT = "content-type"
BINARY_CASES: list[tuple[str, tuple[list, bytes | None], str]] = [
    ("bin-missing-ce_id", binary_with("decision.made", drop=("ce_id",)), "invalid_envelope"),
    ("bin-missing-ce_source", binary_with("price.agreed", drop=("ce_source",)), "invalid_envelope"),
    ("bin-missing-ce_type", binary_with("price.agreed", drop=("ce_type",)), "invalid_envelope"),
    ("bin-missing-ce_time", binary_with("price.agreed", drop=("ce_time",)), "invalid_envelope"),
    ("bin-specversion-0.3", binary_with("decision.made", ce_specversion=b"0.3"), "invalid_envelope"),
    ("bin-specversion-empty", binary_with("decision.made", ce_specversion=b""), "invalid_envelope"),
    ("bin-specversion-not-utf8", binary_with("decision.made", ce_specversion=b"\xff1.0"), "invalid_envelope"),
    ("bin-id-not-utf8", binary_with("decision.made", ce_id=b"evt-\xc3\x28"), "invalid_envelope"),
    ("bin-source-latin1", binary_with("decision.made", ce_source="erp/münchen".encode("latin-1")), "invalid_envelope"),
    ("bin-extension-not-utf8", binary_with("decision.made", ce_traceparent=b"\xfe\xff"), "invalid_envelope"),
    ("bin-content-type-not-utf8", binary_with("decision.made", **{CT: b"application/json\xff"}), "invalid_envelope"),
    ("bin-id-header-null", binary_with("decision.made", ce_id=None), "invalid_envelope"),
    ("bin-id-with-nul", binary_with("decision.made", ce_id=b"evt\x001"), "invalid_envelope"),
    ("bin-id-empty", binary_with("decision.made", ce_id=b""), "invalid_envelope"),
    ("bin-id-129-chars", binary_with("decision.made", ce_id=b"x" * 129), "invalid_envelope"),
    ("bin-two-different-ids", (binary_with("decision.made")[0] + [("ce_id", b"other")], binary_with("decision.made")[1]),
     "invalid_envelope"),
    ("bin-naive-time", binary_with("decision.made", ce_time=b"2027-01-10T09:00:00"), "invalid_envelope"),
    ("bin-time-epoch", binary_with("decision.made", ce_time=b"1799571600"), "invalid_envelope"),
    ("bin-content-type-text", binary_with("decision.made", **{CT: b"text/plain"}), "invalid_envelope"),
    ("bin-content-type-xml", binary_with("decision.made", **{CT: b"application/xml"}), "invalid_envelope"),
    ("bin-content-type-structured", binary_with("decision.made", **{CT: b"application/cloudevents+json"}),
     "invalid_envelope"),
    ("bin-value-array", (binary_with("decision.made")[0], b"[1, 2]"), "invalid_envelope"),
    ("bin-value-string", (binary_with("decision.made")[0], b'"acknowledge"'), "invalid_envelope"),
    ("bin-value-json-null", (binary_with("decision.made")[0], b"null"), "invalid_envelope"),
    ("bin-value-number", (binary_with("decision.made")[0], b"42"), "invalid_envelope"),
    ("bin-value-whole-structured-event", (binary_with("decision.made")[0], encode(envelope("decision.made"))),
     "invalid_data"),
    ("bin-value-null", (binary_with("decision.made")[0], None), "invalid_json"),
    ("bin-value-empty", (binary_with("decision.made")[0], b""), "invalid_json"),
    ("bin-value-not-json", (binary_with("decision.made")[0], b"alert_id=a"), "invalid_json"),
    ("bin-value-not-utf8", (binary_with("decision.made")[0], b'{"alert_id": "\xff"}'), "invalid_json"),
    ("bin-value-nan", (binary_with("decision.made")[0], b'{"alert_id": NaN}'), "invalid_json"),
    ("bin-value-too-large", (binary_with("decision.made")[0], b" " * MAX_MESSAGE_BYTES + b"{}"), "too_large"),
    ("bin-too-large-with-bad-headers", ([("ce_specversion", b"0.3")], b"\xff" * (MAX_MESSAGE_BYTES + 1)), "too_large"),
    ("bin-unknown-type", binary_with("decision.made", ce_type=b"price.haggled"), "unknown_type"),
    ("bin-invalid-data", binary(W("price.agreed", price="-1")), "invalid_data"),
    ("bin-money-too-precise", binary(W("price.agreed", price="0.0000001")), "invalid_data"),
    ("bin-comment-too-long", binary(W("decision.made", comment="c" * 2001)), "invalid_data"),
]

# wrong_topic (CONTRACT §3): (name, message as (headers, value), the input topic it came from, code).
# Checked once the type is known, before the data: earlier problems keep their code.
TOPIC_CASES: list[tuple[str, tuple[list, bytes | None], str, str]] = [
    ("decision-on-agreements", ([], encode(envelope("decision.made"))), "erp.agreements", "wrong_topic"),
    ("price-on-accounts", ([], encode(envelope("price.agreed"))), "crm.accounts", "wrong_topic"),
    ("account-on-decisions", ([], encode(envelope("account.upserted"))), "kam.decisions", "wrong_topic"),
    ("dunning-on-stock", ([], encode(envelope("dunning.triggered"))), "erp.stock", "wrong_topic"),
    ("binary-decision-on-dunning", binary(envelope("decision.made")), "finance.dunning", "wrong_topic"),
    ("wrong-topic-and-invalid-data", ([], encode(W("price.agreed", price="-1"))), "erp.promotions", "wrong_topic"),
    ("wrong-topic-but-invalid-envelope", ([], encode(E("price.agreed", time="yesterday"))), "crm.accounts",
     "invalid_envelope"),
    ("wrong-topic-but-unknown-type", ([], encode(E("price.agreed", type="price.haggled"))), "crm.accounts",
     "unknown_type"),
    ("right-topic-invalid-data", ([], encode(W("price.agreed", price="-1"))), "erp.agreements", "invalid_data"),
]


def _value(case: object) -> bytes | None:
    if case is None or isinstance(case, bytes):
        return case
    return encode(case)


def test_corpus_is_big_and_named_uniquely():
    names = [name for name, _, _ in CASES] + [name for name, _, _ in BINARY_CASES] + [n for n, *_ in TOPIC_CASES]
    assert len(names) >= 40
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(("case", "code"), [(c, code) for _, c, code in CASES], ids=[n for n, _, _ in CASES])
def test_hostile_message_is_rejected_with_code(case, code):
    with pytest.raises(InvalidMessage) as info:
        decode_event(_value(case))
    assert info.value.code == code, info.value.message
    assert info.value.message
    assert len(info.value.message) <= 300


@pytest.mark.parametrize(("message", "code"), [(m, code) for _, m, code in BINARY_CASES],
                         ids=[n for n, _, _ in BINARY_CASES])
def test_hostile_binary_message_is_rejected_with_code(message, code):
    headers, value = message
    with pytest.raises(InvalidMessage) as info:
        decode_event(value, headers)
    assert info.value.code == code, info.value.message
    assert info.value.message
    assert len(info.value.message) <= 300


@pytest.mark.parametrize(("message", "topic", "code"), [(m, t, code) for _, m, t, code in TOPIC_CASES],
                         ids=[n for n, _, _, _ in TOPIC_CASES])
def test_message_on_another_topic_is_rejected_with_code(message, topic, code):
    headers, value = message
    with pytest.raises(InvalidMessage) as info:
        decode_event(value, headers, topic)
    assert info.value.code == code, info.value.message


@pytest.mark.parametrize(
    ("message", "text"),
    [
        (binary_with("decision.made", drop=("ce_id",)), "header ce_id: missing"),
        (binary_with("decision.made", ce_source=b"\xffx"), "header ce_source: not UTF-8"),
        (binary_with("decision.made", ce_specversion=b"0.3"), "header ce_specversion: '0.3' is not supported"),
        (binary_with("decision.made", ce_time=b"noon"), "header ce_time: must be an RFC 3339 date-time"),
        (binary_with("decision.made", **{CT: b"text/plain"}), "header content-type: 'text/plain' is not"),
        ((binary_with("decision.made")[0], b"[]"), "value: must be the event's data as a JSON object"),
        (binary(W("decision.made", comment="c" * 2001)), "data.comment: String should have at most 2000"),
    ],
    ids=["missing-id", "source-not-utf8", "specversion", "time", "content-type", "value-array", "comment"],
)
def test_binary_message_names_the_failing_header(message, text):
    headers, value = message
    with pytest.raises(InvalidMessage) as info:
        decode_event(value, headers)
    assert info.value.message.startswith(text), info.value.message


def test_wrong_topic_names_both_topics():
    with pytest.raises(InvalidMessage) as info:
        decode_event(encode(envelope("decision.made")), (), "erp.agreements")
    assert "'kam.decisions'" in info.value.message and "'erp.agreements'" in info.value.message


@pytest.mark.parametrize(
    "event",
    [
        W("price.agreed", price="123456789012345.123456"),
        W("dunning.triggered", amount="0.000001"),
        W("account.upserted", name="n" * 200),
        W("team.member_assigned", name="é" * 200, email="a" * 242 + "@example.com"),
        W("decision.made", comment="c" * 2000),
        W("price.agreed", agreed_by="p" * 128),
    ],
    ids=["money-15-and-6-digits", "money-6-decimals", "name-200", "member-name-200-email-254", "comment-2000",
         "id-128"],
)
def test_values_at_the_limits_are_accepted(event):
    assert decode_event(encode(event)).type == event["type"]
    headers, value = binary(event)
    assert decode_event(value, headers).digest == decode_event(encode(event)).digest


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (W("price.agreed", price="-1"), "data.price"),
        (W("price.agreed", country=None), "data.country"),
        (W("price.agreed", valid_to="2026-01-01"), "data.valid_to"),
        (W("service.agreed", price=None), "data.price"),
        (W("stock.shortage", orders=[_order(qty=0)]), "data.orders.0.qty"),
        (E("decision.made", time="2027-01-10T09:00:00"), "time"),
        (_without("specversion"), "specversion"),
    ],
    ids=["money", "country", "valid_to", "paid-price", "nested-qty", "time", "specversion"],
)
def test_message_names_the_failing_field(event, field):
    with pytest.raises(InvalidMessage) as info:
        decode_event(encode(event))
    assert info.value.message.startswith(field), info.value.message


def test_message_does_not_echo_huge_input():
    with pytest.raises(InvalidMessage) as info:
        decode_event(encode(E("decision.made", type="t" * 100_000)))
    assert info.value.code == "unknown_type"
    assert len(info.value.message) < 200


def test_exactly_max_size_is_not_too_large():
    base = encode(envelope("decision.made"))
    value = base[:-1] + b" " * (MAX_MESSAGE_BYTES - len(base)) + b"}"
    assert len(value) == MAX_MESSAGE_BYTES
    assert decode_event(value).type == "decision.made"


def test_valid_surrogate_pair_escape_is_accepted():
    value = raw(json.dumps(W("decision.made", comment="\U0001f600")))  # json.dumps escapes as \ud83d\ude00
    assert b"\\ud83d" in value
    assert decode_event(value).data.comment == "\U0001f600"

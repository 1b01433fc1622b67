"""CloudEvents binary content mode (CONTRACT §2): read as structured mode is, the same event either way.

Binary messages are written by hand (schema_samples.binary) and by the official CloudEvents SDK
(`cloudevents`, both its 2.x core API and its 1.x-style `cloudevents.v1.kafka`), so that what an
integrator's producer sends is what is tested.
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from aiokafka.structs import ConsumerRecord
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent as SdkEvent
from cloudevents.v1 import kafka as ce_kafka_v1
from cloudevents.v1.http import CloudEvent as SdkEventV1
from hypothesis import given
from hypothesis import strategies as st

from schemas import EVENT_MODELS, InvalidMessage, decode_event
from schemas.decode import _decode_exactly
from schemas.registry import TOPIC_BY_TYPE
from services.inputs import InputRecord, decode_records

from .schema_samples import binary, binary_with, encode, envelope
from .test_schemas_fuzz import FUZZ

TYPES = sorted(EVENT_MODELS)


def sdk_message(event: dict, mode: str, content_type: str | None = "application/json"):
    """The official SDK's Kafka message (2.x core API) of a structured event dict."""
    attributes = {k: v for k, v in event.items() if k != "data" and v is not None}
    attributes["time"] = datetime.fromisoformat(attributes["time"])
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    convert = ce_kafka.to_binary if mode == "binary" else ce_kafka.to_structured
    return convert(SdkEvent(attributes, event["data"]), JSONFormat())


def _fields(event):
    return (event.type, event.source, event.id, event.time, event.subject, event.digest, event.data)


@pytest.mark.parametrize("event_type", TYPES)
def test_the_sdks_binary_message_is_the_same_event_as_the_structured_one(event_type):
    event = envelope(event_type)
    structured = decode_event(encode(event), (), TOPIC_BY_TYPE[event_type])
    for content_type in ("application/json", None):
        message = sdk_message(event, "binary", content_type)
        assert "ce_specversion" in message.headers
        read = decode_event(message.value, list(message.headers.items()), TOPIC_BY_TYPE[event_type])
        assert _fields(read) == _fields(structured)
        assert read.envelope.datacontenttype == content_type
    sdk_structured = sdk_message(event, "structured")
    read = decode_event(sdk_structured.value, list(sdk_structured.headers.items()), TOPIC_BY_TYPE[event_type])
    assert _fields(read) == _fields(structured)


@pytest.mark.parametrize("event_type", TYPES)
def test_the_1x_style_sdk_api_too(event_type):
    """`cloudevents.v1.kafka` (the `cloudevents.kafka` of SDK 1.x) writes the time as given."""
    event = envelope(event_type)
    attributes = {k: v for k, v in event.items() if k != "data"}
    sdk_event = SdkEventV1(dict(attributes, datacontenttype="application/json"), event["data"])
    message = ce_kafka_v1.to_binary(sdk_event)
    read = decode_event(message.value, list(message.headers.items()), TOPIC_BY_TYPE[event_type])
    assert _fields(read) == _fields(decode_event(encode(event)))
    message = ce_kafka_v1.to_structured(sdk_event)
    assert _fields(decode_event(message.value, list(message.headers.items()))) == _fields(decode_event(encode(event)))


def test_digest_is_the_same_across_modes_spellings_and_key_order():
    """(source, id) with the same type, instant and data is one event: a duplicate, whatever the mode."""
    event = envelope("stock.shortage", time="2027-01-10T10:00:00+01:00")
    reordered = dict(reversed(list(event.items())))
    reordered["data"] = dict(reversed(list(event["data"].items())))
    digests = {
        decode_event(encode(event)).digest,
        decode_event(json.dumps(reordered, indent=3).encode()).digest,
        decode_event(*reversed(binary(event))).digest,
        decode_event(*reversed(binary(envelope("stock.shortage", time="2027-01-10T09:00:00Z")))).digest,
        decode_event(*reversed(binary(envelope("stock.shortage", time="2027-01-10T09:00:00.000Z")))).digest,
        decode_event(sdk_message(event, "binary").value, list(sdk_message(event, "binary").headers.items())).digest,
    }
    assert len(digests) == 1


@pytest.mark.parametrize("change", ["data", "time", "type"])
def test_other_content_under_the_same_id_has_another_digest(change):
    event = envelope("price.agreed")
    other = envelope("price.agreed")
    if change == "data":
        other["data"]["price"] = "12.51"
    elif change == "time":
        other["time"] = "2027-01-10T09:00:01Z"
    else:
        other = envelope("contract.negotiated", id=event["id"])
    assert decode_event(*reversed(binary(other))).digest != decode_event(encode(event)).digest


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON ; charset=UTF-8", "application/json;v=1"])
def test_content_type_is_application_json_with_any_parameters(content_type):
    headers, value = binary(envelope("price.agreed"), content_type=content_type)
    assert decode_event(value, headers).envelope.datacontenttype == content_type


def test_content_type_header_name_in_any_case_and_missing_header_means_json():
    headers, value = binary(envelope("price.agreed"), content_type=None)
    assert decode_event(value, headers).type == "price.agreed"
    headers.append(("Content-Type", b"text/csv"))
    with pytest.raises(InvalidMessage) as info:
        decode_event(value, headers)
    assert info.value.code == "invalid_envelope"


def test_extensions_and_other_headers_are_ignored():
    headers, value = binary(envelope("price.agreed", partitionkey="PA-1", traceparent="00-ab-cd-01"))
    headers += [("x-tracing", b"\xff\xfe binary"), ("ce_datacontenttype", b"text/plain")]
    event = decode_event(value, headers)
    assert event.type == "price.agreed"
    assert event.envelope.datacontenttype == "application/json"  # the content-type header, not ce_datacontenttype
    assert event.digest == decode_event(encode(envelope("price.agreed"))).digest


def test_same_header_twice_with_the_same_value_is_harmless():
    headers, value = binary(envelope("decision.made"))
    assert decode_event(value, headers + headers[:2]).digest == decode_event(value, headers).digest


def test_mode_is_decided_by_the_ce_specversion_header_alone():
    event = envelope("decision.made")
    # ce_ headers without ce_specversion: structured mode, the value is the event
    assert decode_event(encode(event), [("ce_id", b"evt-x"), ("content-type", b"application/json")]).id == event["id"]
    # the structured value under a ce_specversion header is binary mode: the value is taken as the data
    headers, _ = binary(event)
    with pytest.raises(InvalidMessage) as info:
        decode_event(encode(event), headers)
    assert info.value.code == "invalid_data"


def test_decode_records_passes_headers_and_topic():
    event = envelope("decision.made")
    headers, value = binary(event)
    records = [InputRecord("kam.decisions", 0, 0, None, value, tuple(headers)),
               InputRecord("erp.agreements", 0, 1, None, value, tuple(headers)),
               InputRecord("kam.decisions", 0, 2, None, encode(event)),
               InputRecord("kam.decisions", 0, 3, None, value)]  # binary value without its headers
    first, wrong, structured, headless = decode_records(records)
    assert first.digest == structured.digest
    assert isinstance(wrong, InvalidMessage) and wrong.code == "wrong_topic"
    assert isinstance(headless, InvalidMessage) and headless.code == "invalid_envelope"


def test_decode_records_reads_aiokafkas_consumer_records():
    headers, value = binary(envelope("price.agreed"))
    record = ConsumerRecord(topic="erp.agreements", partition=3, offset=7, timestamp=0, timestamp_type=0, key=b"PA-1",
                            value=value, checksum=None, serialized_key_size=4, serialized_value_size=len(value),
                            headers=tuple(headers))
    (event,) = decode_records([record])
    assert event.type == "price.agreed"
    record = ConsumerRecord(topic="crm.accounts", partition=0, offset=8, timestamp=0, timestamp_type=0, key=None,
                            value=value, checksum=None, serialized_key_size=0, serialized_value_size=len(value),
                            headers=tuple(headers))
    assert decode_records([record])[0].code == "wrong_topic"


# --- the one-pass reading agrees with the exact path in binary mode too ------------------------------


def _outcome(decode, value, headers, topic=None):
    try:
        event = decode(value, headers, topic)
    except InvalidMessage as exc:
        return ("invalid", exc.code, exc.message)
    return ("event", _fields(event), event.envelope.datacontenttype)


def test_one_pass_agrees_with_the_exact_path_on_the_binary_and_topic_corpus():
    from .test_schemas_hostile import BINARY_CASES, TOPIC_CASES

    for _, (headers, value), _ in BINARY_CASES:
        assert _outcome(decode_event, value, headers) == _outcome(_decode_exactly, value, headers)
    for _, (headers, value), topic, _ in TOPIC_CASES:
        assert _outcome(decode_event, value, headers, topic) == _outcome(_decode_exactly, value, headers, topic)


_HEADER_NAMES = st.sampled_from(["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject",
                                 "ce_partitionkey", "content-type", "Content-Type", "ce_datacontenttype", "ce_data",
                                 "x-other"])
_HEADER_VALUES = (st.sampled_from([b"1.0", b"0.3", b"", b"decision.made", b"price.agreed", b"2027-01-10T09:00:00Z",
                                   b"application/json", b"text/plain", b"\xff", b"a\x00b", None])
                  | st.binary(max_size=12) | st.text(max_size=12).map(lambda t: t.encode("utf-8")))


@FUZZ
@given(st.sampled_from(TYPES), st.lists(st.tuples(st.sampled_from(["drop", "set", "add"]), _HEADER_NAMES,
                                                  _HEADER_VALUES), max_size=4),
       st.sampled_from([None, "value", "array"]), st.sampled_from([None, *sorted(set(TOPIC_BY_TYPE.values()))]))
def test_one_pass_agrees_with_the_exact_path_on_mutated_headers(event_type, changes, value_change, topic):
    headers, value = binary(envelope(event_type))
    for action, name, raw in changes:
        if action in ("drop", "set"):
            headers = [(n, r) for n, r in headers if n != name]
        if action in ("set", "add"):
            headers.append((name, raw))
    if value_change == "array":
        value = b"[" + value + b"]"
    elif value_change == "value":
        value = encode(envelope(event_type))
    fast, exact = _outcome(decode_event, value, headers, topic), _outcome(_decode_exactly, value, headers, topic)
    assert fast == exact
    if fast[0] == "invalid":
        assert fast[1] in {"invalid_json", "invalid_envelope", "unknown_type", "wrong_topic", "invalid_data"}


def test_the_usual_message_and_the_header_by_header_reading_agree():
    """The fast reading of the usual headers (dictionary look-ups) and the loop give the same attributes."""
    from schemas.decode import _binary_attributes

    for event_type in TYPES:
        for content_type in ("application/json", None):
            headers, value = binary(envelope(event_type), content_type=content_type)
            fast = decode_event(value, headers)
            attributes, found = _binary_attributes(headers)
            assert found == content_type
            assert attributes["id"] == fast.id and attributes["time"] == envelope(event_type)["time"]


def test_binary_with_helper_really_changes_the_headers():
    headers, _ = binary_with("decision.made", drop=("ce_id",), ce_type=b"x")
    names = [n for n, _ in headers]
    assert "ce_id" not in names and ("ce_type", b"x") in headers

"""The AsyncAPI document describes both content modes of every input topic (CONTRACT §2)."""

from __future__ import annotations

import re

import pytest

from schemas import EVENT_MODELS, INPUT_TOPICS, decode_event
from schemas.export import asyncapi_document, binary_headers_schema
from schemas.registry import TOPIC_BY_TYPE, TYPES_BY_TOPIC

from .schema_samples import envelope
from .test_schemas_binary import sdk_message


def _resolve(document: dict, ref: str) -> dict:
    node = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _input_messages(document: dict, topic: str) -> list[dict]:
    channel = next(c for n, c in document["channels"].items() if c.get("address", n) == topic)
    if document["asyncapi"].startswith("3."):
        refs = [m["$ref"] for m in channel["messages"].values()]
    else:
        refs = [m["$ref"] for m in channel["publish"]["message"]["oneOf"]]
    return [_resolve(document, ref) for ref in refs]


@pytest.mark.parametrize("version", ["3.0.0", "2.6.0"])
def test_every_input_topic_has_a_structured_and_a_binary_message(version):
    document = asyncapi_document(version)
    for ref in _refs(document):
        _resolve(document, ref)  # every reference resolves
    for topic in INPUT_TOPICS:
        messages = {m["name"]: m for m in _input_messages(document, topic)}
        assert set(messages) == {"structured", "binary"}
        assert messages["structured"]["contentType"] == "application/cloudevents+json"
        binary = messages["binary"]
        assert binary["contentType"] == "application/json"
        headers = _resolve(document, binary["headers"]["$ref"])
        assert headers == binary_headers_schema(topic)
        assert set(headers["required"]) == {"ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time"}
        payload = binary["payload"]
        data_refs = [payload["$ref"]] if "$ref" in payload else [p["$ref"] for p in payload["oneOf"]]
        assert [r.rsplit("/", 1)[-1] for r in data_refs] == [EVENT_MODELS[t].__name__ for t in TYPES_BY_TOPIC[topic]]


def test_asyncapi_3_operations_receive_both_messages():
    document = asyncapi_document("3.0.0")
    for operation in document["operations"].values():
        topic = operation["channel"]["$ref"].rsplit("/", 1)[-1]
        if topic in INPUT_TOPICS:
            assert {m["$ref"].rsplit("/", 1)[-1] for m in operation["messages"]} == {"SubscribeMessage",
                                                                                     "BinaryMessage"}


def _fits(schema: dict, headers: dict[str, bytes]) -> bool:
    """A small check of headers against binary_headers_schema (the keywords it uses)."""
    values = {name: raw.decode() for name, raw in headers.items()}
    if not set(schema["required"]) <= set(values):
        return False
    for name, text in values.items():
        rule = schema["properties"].get(name)
        if rule is None:
            continue  # extension attributes and other headers
        if "const" in rule and text != rule["const"]:
            return False
        if "enum" in rule and text not in rule["enum"]:
            return False
        if not rule.get("minLength", 0) <= len(text) <= rule.get("maxLength", len(text)):
            return False
        if "pattern" in rule and not re.search(rule["pattern"], text):
            return False
    return True


@pytest.mark.parametrize("event_type", sorted(EVENT_MODELS))
def test_the_headers_schema_takes_what_the_sdk_sends_and_onevoice_accepts_and_refuses_other_topics(event_type):
    message = sdk_message(envelope(event_type), "binary")
    topic = TOPIC_BY_TYPE[event_type]
    decode_event(message.value, list(message.headers.items()), topic)
    assert _fits(binary_headers_schema(topic), message.headers)
    other = next(t for t in INPUT_TOPICS if t != topic)
    assert not _fits(binary_headers_schema(other), message.headers)  # wrong_topic, as documented
    for content_type in (b"application/json; charset=utf-8", b"text/plain"):
        headers = dict(message.headers, **{"content-type": content_type})
        accepted = True
        try:
            decode_event(message.value, list(headers.items()), topic)
        except Exception:
            accepted = False
        assert _fits(binary_headers_schema(topic), headers) == accepted

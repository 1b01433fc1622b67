"""Turn a Kafka message (value, headers, topic) into a validated :class:`Event` (CONTRACT §2, §3, §6).

A message with a ``ce_specversion`` header is read in CloudEvents **binary** content mode: the
attributes are the ``ce_*`` headers (UTF-8), the value is the event's ``data`` as JSON. Any other
message is read in **structured** mode: the value is the whole event as JSON. Both end in the
same envelope (attributes plus ``data``), validated by the same models, so an event is the same
event in either mode: same checks, same dead-letter codes, same ``Event.digest``.

Checks, in order; the first failure raises :class:`InvalidMessage` with the
dead-letter ``code`` of CONTRACT §6:

1. ``None`` or empty value                      -> ``invalid_json``
2. more than :data:`MAX_MESSAGE_BYTES` bytes     -> ``too_large``
   (binary mode only) the headers themselves: a ``ce_*`` or ``content-type`` header that is not
   UTF-8 or holds a NUL, a ``ce_*`` header given twice with different values, ``ce_specversion``
   other than ``1.0``, a ``content-type`` other than ``application/json`` (parameters allowed)
                                                 -> ``invalid_envelope`` (they say how to read the
   value, so they come before it; a missing ``content-type`` is read as JSON, as the official
   SDKs send an event without ``datacontenttype``)
3. not UTF-8, not JSON (incl. NaN/Infinity, a BOM, lone surrogates,
   NUL characters, nesting too deep for the parser) -> ``invalid_json``
4. not an object / envelope attribute missing or wrong -> ``invalid_envelope``
   (binary mode: a missing or wrong ``ce_*`` header, named as the header; a value that is JSON
   but not an object, as in structured mode a ``data`` that is not an object)
5. ``type`` not one of CONTRACT §3                -> ``unknown_type``
6. the message came from an input topic other than its type's (CONTRACT §3) -> ``wrong_topic``:
   checked once the type is known and before its data, since data on the wrong topic is not
   looked at (whoever may publish there may not publish this type). Only input topics are
   compared: the service reads nothing else; a caller without a topic (tools, tests) skips it.
7. ``data`` does not fit that type's model         -> ``invalid_data``
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone

import orjson
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from pydantic_core import from_json

from .envelope import CloudEvent
from .registry import ENVELOPE_MODELS, EVENT_MODELS, INPUT_TOPICS, KEY_FIELD_BY_TOPIC, TOPIC_BY_TYPE

__all__ = ["MAX_MESSAGE_BYTES", "DecodeErrorCode", "InvalidMessage", "Event", "decode_event", "Headers",
           "BINARY_MARKER"]

#: Largest accepted message value (512 KiB); larger ones are dead letters ``too_large``.
MAX_MESSAGE_BYTES = 512 * 1024

DecodeErrorCode = Literal["invalid_json", "invalid_envelope", "unknown_type", "wrong_topic", "invalid_data",
                          "too_large"]

#: Kafka headers as aiokafka gives them: (name, value) pairs, a name may repeat, a value may be null.
Headers = Sequence[tuple[str, bytes | None]]

#: The header whose presence means binary content mode (CloudEvents Kafka protocol binding, 3.2.1).
BINARY_MARKER = "ce_specversion"
_CE_PREFIX = "ce_"
_JSON_MEDIA_TYPE = "application/json"
_INPUT_TOPICS = frozenset(INPUT_TOPICS)

_MAX_MESSAGE_CHARS = 300
_FIELD_FIRST = re.compile(r"^[a-z_]+: ")
# JSON escapes that may produce a lone surrogate or a NUL character.
_SUSPICIOUS_ESCAPE = re.compile(r"\\u(?:[dD][89a-fA-F][0-9a-fA-F]{2}|0000)")
_SUSPICIOUS_BYTES = re.compile(_SUSPICIOUS_ESCAPE.pattern.encode())


class InvalidMessage(Exception):
    """A message value that cannot be used; ``code`` is its dead-letter code."""

    def __init__(self, code: DecodeErrorCode, message: str) -> None:
        if len(message) > _MAX_MESSAGE_CHARS:
            message = message[: _MAX_MESSAGE_CHARS - 1] + "…"
        super().__init__(f"{code}: {message}")
        self.code: DecodeErrorCode = code
        self.message = message

    def __reduce__(self):  # picklable despite the two-argument constructor
        return (type(self), (self.code, self.message))


@dataclass(slots=True, eq=False)
class Event:
    """A validated input event: its envelope and its typed ``data``. Treat as read-only.

    Read the typed ``data`` here, not ``envelope.data`` (a dict or the same model, depending on
    how the message was read).
    ``type``, ``source``, ``id`` and ``time`` (timezone-aware, UTC) are copied from the envelope:
    the processor reads them several times per event, and a plain slot is the cheapest read.
    (Not frozen: a frozen dataclass sets every field through ``object.__setattr__``.)
    """

    envelope: CloudEvent
    data: BaseModel
    type: str
    source: str
    id: str
    time: datetime
    digest: str = ""  # of type, time and data: the same (source, id) with another digest is a conflict

    @property
    def subject(self) -> str | None:
        return self.envelope.subject

    @property
    def key(self) -> tuple[str, str]:
        """``(source, id)``: the identity used for de-duplication."""
        return (self.envelope.source, self.envelope.id)

    @property
    def ref(self) -> str:
        """``"<source>/<id>"`` as used in ``caused_by``."""
        return f"{self.envelope.source}/{self.envelope.id}"

    @property
    def topic(self) -> str:
        """The input topic this type belongs on (CONTRACT §3)."""
        return TOPIC_BY_TYPE[self.envelope.type]

    @property
    def kafka_key(self) -> str:
        """The Kafka key producers should use for this event (CONTRACT §3)."""
        return getattr(self.data, KEY_FIELD_BY_TOPIC[self.topic])


def content_digest(event_type: str, time: datetime, data: Any) -> str:
    """What makes two deliveries of one `(source, id)` the same event (CONTRACT §2): type, instant, data.

    `data` as parsed JSON, keys sorted, so that key order, whitespace and the content mode the
    event arrived in do not matter; the time as a UTC instant, so an offset's spelling does not.
    """
    parts = [event_type, time.astimezone(timezone.utc).isoformat(), data]
    try:
        text = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer beyond 64 bits in a field no model reads
        text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.blake2b(text, digest_size=16).hexdigest()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _check_strings(obj: Any) -> str | None:
    """Find a string (key or value) with a NUL or an unpaired surrogate."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                stack.append(k)
                stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                return "string contains a NUL character"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "string contains an unpaired UTF-16 surrogate"
    return None


def _describe(error: ValidationError, prefix: str = "") -> str:
    first = error.errors(include_url=False, include_context=False, include_input=False)[0]
    loc = ".".join(str(part) for part in first["loc"])
    msg = first["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if loc:
        text = f"{prefix}{loc}: {msg}"
    elif _FIELD_FIRST.match(msg):  # model-level rule whose message starts with "field: "
        text = f"{prefix}{msg}"
    else:
        text = f"{prefix.rstrip('.')}: {msg}" if prefix else msg
    more = error.error_count() - 1
    return f"{text} (+{more} more)" if more else text


def _load_json(value: bytes | bytearray | memoryview | str | None) -> Any:
    if value is None:
        raise InvalidMessage("invalid_json", "empty message value (null)")
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogatepass")
    if len(value) == 0:
        raise InvalidMessage("invalid_json", "empty message value")
    if len(value) > MAX_MESSAGE_BYTES:
        raise InvalidMessage("too_large", f"message value is {len(value)} bytes, limit is {MAX_MESSAGE_BYTES}")
    value = bytes(value)
    try:
        # pydantic-core's parser, about twice as fast; whatever it accepts, the standard library reads
        # the same way (tests/unit/test_schemas_fuzz.py compares them). Anything it refuses, and
        # escapes that need a closer look, go the exact way, for the exact error.
        obj = from_json(value, allow_inf_nan=False, cache_strings="keys")  # values are mostly unique ids
    except ValueError:
        return _load_json_exactly(value)
    if b"\\u" in value and _SUSPICIOUS_BYTES.search(value):
        return _load_json_exactly(value)
    return obj


def _load_json_exactly(value: bytes) -> Any:
    """The standard library's reading of a value, with the dead-letter message for what it refuses."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessage("invalid_json", f"not UTF-8: invalid byte at position {exc.start}") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise InvalidMessage("invalid_json", "JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, int too long
        raise InvalidMessage("invalid_json", f"not JSON: {exc}") from None
    if "\\u" in text and _SUSPICIOUS_ESCAPE.search(text):
        problem = _check_strings(obj)
        if problem:
            raise InvalidMessage("invalid_json", problem)
    return obj


# Every type's envelope with its typed `data`, told apart by `type`: a valid message is
# validated in one pass, not as an envelope whose `data` is copied and then validated again.
_ONE_PASS = TypeAdapter(Annotated[Union[tuple(ENVELOPE_MODELS.values())],  # noqa: UP007 (Union of a tuple)
                                  Field(discriminator="type")])
# pydantic-core's validator itself: the adapter's method only checks its options and calls this.
_validate_one_pass = _ONE_PASS.validator.validate_python


def decode_event(value: bytes | None, headers: Headers = (), topic: str | None = None) -> Event:
    """Validate a message; raise :class:`InvalidMessage` if it is unusable.

    ``headers`` (the Kafka headers) decide the content mode; ``topic`` is the input topic the
    message came from (``None``: not checked). A valid message is validated in one pass (about a
    fifth less work); a message that pass refuses is validated again step by step, which names
    its first problem in the order above.
    """
    if headers:
        for header in headers:
            if header[0] == BINARY_MARKER:
                return _decode_binary(value, headers, topic)
    obj = _load_json(value)
    try:
        envelope = _validate_one_pass(obj)
    except ValidationError:
        return _validate_exactly(obj, topic)
    if topic is not None and topic != TOPIC_BY_TYPE[envelope.type]:
        _check_topic(envelope.type, topic)
    return Event(envelope, envelope.data, envelope.type, envelope.source, envelope.id, envelope.time,
                 content_digest(envelope.type, envelope.time, obj["data"]))


def _decode_exactly(value: bytes | None, headers: Headers = (), topic: str | None = None) -> Event:
    """`decode_event` without the one pass (tests compare the two)."""
    if any(header[0] == BINARY_MARKER for header in headers):
        return _decode_binary(value, headers, topic, exactly=True)
    return _validate_exactly(_load_json(value), topic)


def _check_topic(event_type: str, topic: str) -> None:
    expected = TOPIC_BY_TYPE[event_type]
    if topic != expected and topic in _INPUT_TOPICS:
        raise InvalidMessage("wrong_topic", f"type {event_type!r} is accepted only on topic {expected!r}, "
                                            f"not on {topic[:80]!r}")


def _validate_exactly(obj: Any, topic: str | None = None, binary: bool = False) -> Event:
    """Check the envelope, then the type, its topic, then its data: the first problem is the one named."""
    if not isinstance(obj, dict):
        raise InvalidMessage("invalid_envelope", f"event must be a JSON object, not {_json_type(obj)}")
    try:
        envelope = CloudEvent.model_validate(obj)
    except ValidationError as exc:
        raise InvalidMessage("invalid_envelope", _describe_binary(exc, obj) if binary else _describe(exc)) from None
    model = EVENT_MODELS.get(envelope.type)
    if model is None:
        raise InvalidMessage("unknown_type", f"{'ce_type' if binary else 'type'}: unknown event type "
                                             f"{envelope.type[:80]!r}")
    if topic is not None:
        _check_topic(envelope.type, topic)
    try:
        data = model.model_validate(envelope.data)
    except ValidationError as exc:
        raise InvalidMessage("invalid_data", _describe(exc, "data.")) from None
    return Event(envelope, data, envelope.type, envelope.source, envelope.id, envelope.time,
                 content_digest(envelope.type, envelope.time, envelope.data))


# --- binary content mode ------------------------------------------------------------------


def _decode_binary(value: bytes | None, headers: Headers, topic: str | None, exactly: bool = False) -> Event:
    """`decode_event` of a binary-mode message: its ``ce_*`` attributes plus the value as ``data`` make the
    envelope, validated as a structured one is (checks 1-3 of the module's list for binary mode here;
    whatever the models then refuse is named as the header it came from).

    One function, the usual message read with dictionary look-ups: a call or a loop per header had
    cost more than what binary mode saves in parsing (the value holds only ``data``).
    """
    if value is not None and len(value) > MAX_MESSAGE_BYTES:
        raise InvalidMessage("too_large", f"message value is {len(value)} bytes, limit is {MAX_MESSAGE_BYTES}")
    if not value:
        _load_json(value)  # the null/empty value's own message
    attributes = None
    by_name = dict(headers)
    if len(by_name) == len(headers):
        # The usual message: the five required attributes, maybe ce_subject and content-type, nothing
        # else, each once. Anything else (extensions, a header twice, a problem) takes the loop.
        try:
            attributes = {"specversion": by_name["ce_specversion"].decode(), "id": by_name["ce_id"].decode(),
                          "source": by_name["ce_source"].decode(), "type": by_name["ce_type"].decode(),
                          "time": by_name["ce_time"].decode()}
            read = 5
            subject = by_name.get("ce_subject")
            if subject is not None:
                attributes["subject"] = subject.decode()
                read += 1
            content_type = by_name.get("content-type")
            if content_type is not None:
                content_type = content_type.decode()
                read += 1
            if read != len(by_name) or "\x00" in "".join(attributes.values()) \
                    or (content_type is not None and "\x00" in content_type):
                attributes = None
        except (KeyError, AttributeError, UnicodeDecodeError):
            attributes = None
    if attributes is None:
        attributes, content_type = _binary_attributes(headers)
    if attributes["specversion"] != "1.0":
        raise InvalidMessage("invalid_envelope", f"header ce_specversion: {attributes['specversion'][:20]!r} is "
                                                 "not supported, only CloudEvents '1.0'")
    if content_type is not None:
        if content_type != _JSON_MEDIA_TYPE and content_type.split(";", 1)[0].strip().lower() != _JSON_MEDIA_TYPE:
            raise InvalidMessage("invalid_envelope", f"header content-type: {content_type[:80]!r} is not "
                                                     f"{_JSON_MEDIA_TYPE!r}; in binary mode the value is the "
                                                     "event's data as JSON")
        attributes["datacontenttype"] = content_type  # in binary mode the content-type header is this attribute
    elif "datacontenttype" in attributes:
        del attributes["datacontenttype"]  # ... and never a ce_ header
    # The value is `data` (a ce_data header is not an attribute). Its size and emptiness are checked
    # above: bytes go straight to the fast parser, with _load_json's fallbacks.
    if type(value) is bytes:
        try:
            data = from_json(value, allow_inf_nan=False, cache_strings="keys")
        except ValueError:
            data = _load_json_exactly(value)
        else:
            if b"\\u" in value and _SUSPICIOUS_BYTES.search(value):
                data = _load_json_exactly(value)
    else:
        data = _load_json(value)
    attributes["data"] = data
    if exactly:
        return _validate_exactly(attributes, topic, binary=True)
    try:
        envelope = _validate_one_pass(attributes)
    except ValidationError:
        return _validate_exactly(attributes, topic, binary=True)
    if topic is not None and topic != TOPIC_BY_TYPE[envelope.type]:
        _check_topic(envelope.type, topic)
    return Event(envelope, envelope.data, envelope.type, envelope.source, envelope.id, envelope.time,
                 content_digest(envelope.type, envelope.time, data))


def _binary_attributes(headers: Headers) -> tuple[dict[str, str], str | None]:
    """The ``ce_*`` headers as attributes (prefix dropped) and the ``content-type`` header, of any message;
    raises ``invalid_envelope`` naming the first unusable one (no value, not UTF-8, a NUL, given twice
    with different values). Headers of other names are not CloudEvents': not looked at."""
    attributes: dict[str, str] = {}
    content_type = None
    for name, raw in headers:
        is_attribute = name.startswith(_CE_PREFIX)
        if not (is_attribute or name.lower() == "content-type"):
            continue
        label = name[:40]
        if raw is None:
            raise InvalidMessage("invalid_envelope", f"header {label}: has no value")
        if isinstance(raw, str):
            text = raw
        else:
            try:
                text = bytes(raw).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidMessage("invalid_envelope",
                                     f"header {label}: not UTF-8 (invalid byte at position {exc.start})") from None
        if "\x00" in text:
            raise InvalidMessage("invalid_envelope", f"header {label}: contains a NUL character")
        if is_attribute:
            if attributes.setdefault(name[3:], text) != text:
                raise InvalidMessage("invalid_envelope", f"header {label}: given twice with different values")
        elif content_type is not None and content_type != text:
            raise InvalidMessage("invalid_envelope", f"header {label}: given twice with different values")
        else:
            content_type = text
    return attributes, content_type


def _describe_binary(error: ValidationError, obj: dict[str, Any]) -> str:
    """An envelope problem of a binary-mode message, named as the header (or the value) it came from."""
    first = error.errors(include_url=False, include_context=False, include_input=False)[0]
    loc = first["loc"]
    if loc and loc[0] == "data":
        return f"value: must be the event's data as a JSON object (binary mode), not {_json_type(obj.get('data'))}"
    header = f"header ce_{loc[0]}" if loc else "headers"
    if first["type"] == "missing":
        text = f"{header}: missing (binary mode needs ce_specversion, ce_id, ce_source, ce_type, ce_time)"
    else:
        text = f"{header}: {first['msg'].removeprefix('Value error, ')}"
    more = error.error_count() - 1
    return f"{text} (+{more} more)" if more else text


def _json_type(obj: Any) -> str:
    if obj is None:
        return "null"
    if isinstance(obj, bool):
        return "a boolean"
    if isinstance(obj, (int, float)):
        return "a number"
    if isinstance(obj, str):
        return "a string"
    if isinstance(obj, list):
        return "an array"
    return type(obj).__name__

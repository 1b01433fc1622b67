"""Turn a Kafka message value into a validated :class:`Event` (CONTRACT §2, §6).

Checks, in order; the first failure raises :class:`InvalidMessage` with the
dead-letter ``code`` of CONTRACT §6:

1. ``None`` or empty value                      -> ``invalid_json``
2. more than :data:`MAX_MESSAGE_BYTES` bytes     -> ``too_large``
3. not UTF-8, not JSON (incl. NaN/Infinity, a BOM, lone surrogates,
   NUL characters, nesting too deep for the parser) -> ``invalid_json``
4. not an object / envelope attribute missing or wrong -> ``invalid_envelope``
5. ``type`` not one of CONTRACT §3                -> ``unknown_type``
6. ``data`` does not fit that type's model         -> ``invalid_data``
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone

import orjson
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from pydantic_core import from_json

from .envelope import CloudEvent
from .registry import ENVELOPE_MODELS, EVENT_MODELS, KEY_FIELD_BY_TOPIC, TOPIC_BY_TYPE

__all__ = ["MAX_MESSAGE_BYTES", "DecodeErrorCode", "InvalidMessage", "Event", "decode_event"]

#: Largest accepted message value (512 KiB); larger ones are dead letters ``too_large``.
MAX_MESSAGE_BYTES = 512 * 1024

DecodeErrorCode = Literal["invalid_json", "invalid_envelope", "unknown_type", "invalid_data", "too_large"]

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


def decode_event(value: bytes | None) -> Event:
    """Validate a message value; raise :class:`InvalidMessage` if it is unusable.

    A valid message is validated in one pass (about a fifth less work); a message that pass
    refuses is validated again step by step, which names its first problem in the order above.
    """
    obj = _load_json(value)
    try:
        envelope = _ONE_PASS.validate_python(obj)
    except ValidationError:
        return _validate_exactly(obj)
    return Event(envelope, envelope.data, envelope.type, envelope.source, envelope.id, envelope.time,
                 content_digest(envelope.type, envelope.time, obj["data"]))


def _decode_exactly(value: bytes | None) -> Event:
    """`decode_event` without the one pass (tests compare the two)."""
    return _validate_exactly(_load_json(value))


def _validate_exactly(obj: Any) -> Event:
    """Check the envelope, then the type, then its data: the first problem is the one named."""
    if not isinstance(obj, dict):
        raise InvalidMessage("invalid_envelope", f"event must be a JSON object, not {_json_type(obj)}")
    try:
        envelope = CloudEvent.model_validate(obj)
    except ValidationError as exc:
        raise InvalidMessage("invalid_envelope", _describe(exc)) from None
    model = EVENT_MODELS.get(envelope.type)
    if model is None:
        raise InvalidMessage("unknown_type", f"type: unknown event type {envelope.type[:80]!r}")
    try:
        data = model.model_validate(envelope.data)
    except ValidationError as exc:
        raise InvalidMessage("invalid_data", _describe(exc, "data.")) from None
    return Event(envelope, data, envelope.type, envelope.source, envelope.id, envelope.time,
                 content_digest(envelope.type, envelope.time, envelope.data))


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

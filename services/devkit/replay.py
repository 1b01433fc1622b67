"""Publish JSON-lines files of CloudEvents to their topics (`onevoice replay`).

Every line is checked as the service will check it (schemas.decode: envelope, type, topic, data)
before anything is sent: a line the service would dead-letter is skipped, with its reason, and
the rest is published (re-running a corrected file is safe: a `(source, id)` already applied is
a duplicate and changes nothing). Each event goes to its type's topic (CONTRACT §3), keyed by the
topic's key field, in the chosen content mode (CONTRACT §2):

- ``structured``: the line as it is (the value is the JSON event);
- ``binary``: the attributes as ``ce_*`` headers (``datacontenttype`` as ``content-type``,
  ``application/json`` when the line has none), the value is ``data`` as JSON;
- ``mixed``: each event in one of the two at random (``seed``: the same file and seed give the
  same choices), as producers of different systems would.

A binary message is decoded again before it is sent, and must be the same event (same digest)
as its line: what a replay publishes is exactly what the file says, in either mode.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from schemas.decode import Event, InvalidMessage, decode_event
from services import kafka_clients
from services.kafka_clients import KafkaTarget

__all__ = ["REPLAY_MODES", "ReplayMode", "ReplayReport", "Message", "binary_message", "prepare_line", "replay_file"]

ReplayMode = Literal["structured", "binary", "mixed"]
REPLAY_MODES: tuple[str, ...] = ("structured", "binary", "mixed")
#: skipped lines whose reason the report lists; the rest are counted
LISTED_PROBLEMS = 10


@dataclass
class ReplayReport:
    published: int = 0
    skipped: int = 0
    #: "line N: <code>: <why>" of the first LISTED_PROBLEMS skipped lines
    problems: list[str] = field(default_factory=list)
    #: events (published, or valid in a dry run) per content mode
    modes: Counter = field(default_factory=Counter)
    valid: int = 0

    @property
    def first_problem(self) -> str | None:
        return self.problems[0] if self.problems else None

    @property
    def unlisted(self) -> int:
        """Skipped lines beyond the listed ones."""
        return self.skipped - len(self.problems)

    def skip(self, number: int, reason: str) -> None:
        self.skipped += 1
        if len(self.problems) < LISTED_PROBLEMS:
            self.problems.append(f"line {number}: {reason}")


@dataclass(frozen=True)
class Message:
    """One Kafka message to publish."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    mode: str


class LineProblem(ValueError):
    """A line that is not published, and why."""


def _header_value(value: Any) -> str:
    """A CloudEvents attribute as a header string (CloudEvents 1.0 type system: canonical string forms)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False)


def binary_message(event: dict[str, Any]) -> tuple[list[tuple[str, bytes]], bytes]:
    """(headers, value) of a structured event in binary content mode (CloudEvents Kafka binding 3.2)."""
    headers = []
    content_type = "application/json"
    for name, value in event.items():
        if name == "data" or value is None:
            continue
        if name == "datacontenttype":
            content_type = _header_value(value)
            continue
        headers.append((f"ce_{name}", _header_value(value).encode("utf-8")))
    headers.append(("content-type", content_type.encode("utf-8")))
    return headers, json.dumps(event["data"], ensure_ascii=False).encode("utf-8")


def prepare_line(line: bytes, *, topic: str | None = None, binary: bool = False) -> Message:
    """The message of one line, or LineProblem with the reason (the dead-letter code the service would give)."""
    try:
        event: Event = decode_event(line, (), topic)
    except InvalidMessage as exc:
        raise LineProblem(f"{exc.code}: {exc.message}") from None
    chosen = topic or event.topic
    key = event.kafka_key.encode("utf-8")
    if not binary:
        return Message(chosen, key, line, [], "structured")
    headers, value = binary_message(json.loads(line))
    try:
        again = decode_event(value, headers, topic)
    except InvalidMessage as exc:
        raise LineProblem(f"cannot be sent in binary mode: {exc.code}: {exc.message}") from None
    if again.digest != event.digest:
        raise LineProblem("cannot be sent in binary mode: its headers and value would be another event")
    return Message(chosen, key, value, headers, "binary")


async def replay_file(target: KafkaTarget, lines: list[bytes], *, topic: str | None = None,
                      mode: ReplayMode = "structured", seed: int = 0, dry_run: bool = False,
                      on_progress: Callable[[int], None] = lambda n: None, chunk: int = 1000) -> ReplayReport:
    """Check every line, publish the valid ones (none in a dry run); blank lines are ignored."""
    if mode not in REPLAY_MODES:
        raise ValueError(f"mode must be one of {', '.join(REPLAY_MODES)}, not {mode!r}")
    report = ReplayReport()
    draw = random.Random(seed)
    producer = None
    if not dry_run:
        producer = kafka_clients.producer(target, enable_idempotence=True, linger_ms=5,
                                          max_request_size=2 * 1024 * 1024, max_batch_size=256 * 1024)
        await producer.start()
    try:
        for start in range(0, len(lines), chunk):
            futures = []
            for number, line in enumerate(lines[start:start + chunk], start=start + 1):
                if not line.strip():
                    continue
                binary = mode == "binary" or (mode == "mixed" and draw.random() < 0.5)
                try:
                    message = prepare_line(line, topic=topic, binary=binary)
                except LineProblem as exc:
                    report.skip(number, str(exc))
                    continue
                report.valid += 1
                report.modes[message.mode] += 1
                if producer is not None:
                    futures.append(await producer.send(message.topic, message.value, key=message.key,
                                                       headers=message.headers or None))
            for future in futures:
                await future
            report.published += len(futures)
            on_progress(min(chunk, len(lines) - start))
    finally:
        if producer is not None:
            await producer.stop()
    return report

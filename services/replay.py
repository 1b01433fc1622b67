"""Publish JSON-lines files of CloudEvents to their topics (`onevoice replay`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from services import kafka_clients
from services.kafka_clients import KafkaTarget

from schemas.registry import KEY_FIELD_BY_TOPIC, TOPIC_BY_TYPE


@dataclass
class ReplayReport:
    published: int = 0
    skipped: int = 0
    first_problem: str | None = None


def route(line: bytes, topic: str | None = None) -> tuple[str, bytes | None]:
    """The topic and key of one event line: by its `type`, keyed by the topic's key field (CONTRACT §3)."""
    event = json.loads(line)
    chosen = topic or TOPIC_BY_TYPE.get(event.get("type"))
    if chosen is None:
        raise ValueError(f"unknown type {event.get('type')!r}")
    key = (event.get("data") or {}).get(KEY_FIELD_BY_TOPIC.get(chosen, ""))
    return chosen, str(key).encode() if key is not None else None


async def replay_file(bootstrap: KafkaTarget, lines: list[bytes], *, topic: str | None = None,
                      on_progress: Callable[[int], None] = lambda n: None, chunk: int = 1000) -> ReplayReport:
    report = ReplayReport()
    producer = kafka_clients.producer(bootstrap, enable_idempotence=True, linger_ms=5,
                                max_request_size=2 * 1024 * 1024, max_batch_size=256 * 1024)
    await producer.start()
    try:
        for start in range(0, len(lines), chunk):
            futures = []
            for number, line in enumerate(lines[start:start + chunk], start=start + 1):
                if not line.strip():
                    continue
                try:
                    chosen, key = route(line, topic)
                except (ValueError, AttributeError) as exc:
                    report.skipped += 1
                    report.first_problem = report.first_problem or f"line {number}: {exc}"
                    continue
                futures.append(await producer.send(chosen, line, key=key))
            for future in futures:
                await future
            report.published += len(futures)
            on_progress(min(chunk, len(lines) - start))
    finally:
        await producer.stop()
    return report

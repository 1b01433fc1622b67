"""`onevoice replay --mode binary|mixed` as a user runs it, against the real broker: what lands on the
topics is the file's events, in the chosen content mode, read back by onevoice's decoder and by the
official CloudEvents SDK."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter

import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat

from consumers.topics import ensure_topics
from schemas import decode_event
from schemas.registry import INPUT_TOPICS
from services import kafka_clients
from services.inputs import decode_records
from services.devkit.scenario_runner import end_offsets
from services.scenarios import bundled_scenarios


def _events(prefix: str) -> list[dict]:
    events = []
    for scenario in bundled_scenarios():
        for step in scenario["steps"]:
            for entry in step.get("publish", []):
                if "value" in entry:
                    events.append(dict(entry["value"], id=f"{prefix}-{entry['value']['id']}"))
    return events


async def _read_since(bootstrap: str, since: dict, wanted: int, timeout_s: float = 30, prefix: bytes = b"") -> list:
    """Records after `since` whose headers or value contain `prefix`, until `wanted` of them (or the timeout)."""
    consumer = kafka_clients.consumer(bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = list(since)
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, since[tp])
        records, deadline = [], time.monotonic() + timeout_s
        while len(records) < wanted and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                records += [m for m in messages if prefix in b"".join(v or b"" for _, v in m.headers) + (m.value or b"")]
        return records
    finally:
        await consumer.stop()


def _replay(path, bootstrap: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ONEVOICE_KAFKA_BOOTSTRAP": "127.0.0.1:1"}  # --bootstrap must win
    return subprocess.run([sys.executable, "-m", "consumers.cli", "replay", str(path), "--bootstrap", bootstrap, *args],
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.kafka
@pytest.mark.parametrize("mode", ["binary", "mixed"])
async def test_replayed_events_land_in_the_chosen_mode_and_read_back_as_the_same_events(mode, kafka_bootstrap,
                                                                                       tmp_path):
    prefix = f"replay-{mode}-{uuid.uuid4().hex[:6]}"
    events = _events(prefix)
    lines = [json.dumps(e) for e in events]
    valid = []  # (line, event) of every line the service would accept, repeated ones too
    for line in lines:
        try:
            valid.append((line, decode_event(line.encode())))
        except Exception:
            pass
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    await ensure_topics(kafka_bootstrap, 6)
    since = await end_offsets(kafka_bootstrap, INPUT_TOPICS)

    result = _replay(path, kafka_bootstrap, "--mode", mode, "--seed", "11", "--skip-invalid")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"published {len(valid)} events to {kafka_bootstrap}" in result.stdout
    assert f"skipped {len(lines) - len(valid)} lines" in result.stdout  # the scenarios' invalid data

    records = await _read_since(kafka_bootstrap, since, len(valid), prefix=prefix.encode())
    assert len(records) == len(valid)
    expected = Counter((e.id, e.digest, e.topic, e.kafka_key.encode()) for _, e in valid)
    data_of = {(e.id, e.digest): json.loads(line)["data"] for line, e in valid}
    decoded = decode_records(records)
    assert Counter((d.id, d.digest, r.topic, r.key) for r, d in zip(records, decoded)) == expected
    binary = 0
    for record, event in zip(records, decoded):
        headers = dict(record.headers)
        sdk_event = ce_kafka.from_kafka(ce_kafka.KafkaMessage(headers=headers, key=record.key, value=record.value),
                                        JSONFormat())
        assert (sdk_event.get_id(), sdk_event.get_type()) == (event.id, event.type)
        if "ce_specversion" in headers:
            binary += 1
            assert json.loads(record.value) == data_of[(event.id, event.digest)]
            assert headers["content-type"] == b"application/json"
    if mode == "binary":
        assert binary == len(records)
    else:
        assert 0 < binary < len(records)


@pytest.mark.kafka
async def test_a_dry_run_publishes_nothing_and_an_invalid_line_fails_the_replay(kafka_bootstrap, tmp_path):
    prefix = f"replay-dry-{uuid.uuid4().hex[:6]}"
    events = _events(prefix)[:5]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in events) + "\n{broken\n")
    await ensure_topics(kafka_bootstrap, 6)
    before = await end_offsets(kafka_bootstrap, INPUT_TOPICS)
    result = _replay(path, kafka_bootstrap, "--dry-run", "--mode", "binary")
    assert result.returncode == 1
    assert "dry run: 5 valid events (5 binary); nothing published" in result.stdout
    assert "line 6: invalid_json" in result.stdout
    assert await _mine(kafka_bootstrap, before, prefix, wait_for=0) == []
    result = _replay(path, kafka_bootstrap)
    assert result.returncode == 1 and "published 5 events" in result.stdout
    assert len(await _mine(kafka_bootstrap, before, prefix, wait_for=5)) == 5


async def _mine(bootstrap: str, since: dict, prefix: str, wait_for: int) -> list:
    """The records after `since` that carry `prefix` (other tests may share the broker)."""
    return await _read_since(bootstrap, since, wanted=max(wait_for, 1), timeout_s=10 if wait_for else 2,
                             prefix=prefix.encode())

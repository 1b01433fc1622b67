"""`onevoice replay` without a broker: line checks, content modes, the report, the command's exit codes."""

from __future__ import annotations

import asyncio
import json

import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from typer.testing import CliRunner

from schemas import decode_event
from consumers.cli import ContentMode, app
from services.devkit.replay import REPLAY_MODES, LineProblem, binary_message, prepare_line, replay_file

from .schema_samples import encode, envelope, event_with


def _line(event: dict) -> bytes:
    return json.dumps(event).encode()


def test_a_structured_line_is_published_as_it_is_on_its_types_topic_with_its_key():
    line = _line(envelope("price.agreed"))
    message = prepare_line(line)
    assert (message.topic, message.key, message.value, message.headers, message.mode) == (
        "erp.agreements", b"PA-1", line, [], "structured")


def test_a_binary_line_is_the_same_event_and_the_official_sdk_reads_it():
    event = envelope("stock.shortage", partitionkey="ITEM-1", sequence=7, sampled=True)
    message = prepare_line(_line(event), binary=True)
    assert (message.topic, message.key, message.mode) == ("erp.stock", b"ITEM-1", "binary")
    headers = dict(message.headers)
    assert headers["ce_specversion"] == b"1.0" and headers["ce_id"] == event["id"].encode()
    assert headers["content-type"] == b"application/json"
    assert (headers["ce_sequence"], headers["ce_sampled"]) == (b"7", b"true")  # canonical string forms
    assert json.loads(message.value) == event["data"]
    assert decode_event(message.value, message.headers, "erp.stock").digest == decode_event(encode(event)).digest
    read = ce_kafka.from_binary(ce_kafka.KafkaMessage(headers=headers, key=message.key, value=message.value),
                                JSONFormat())
    assert (read.get_id(), read.get_source(), read.get_type(), read.get_data()) == (
        event["id"], event["source"], event["type"], event["data"])


def test_a_datacontenttype_becomes_the_content_type_header():
    headers, _ = binary_message(envelope("decision.made", datacontenttype="application/json; charset=utf-8"))
    assert ("content-type", b"application/json; charset=utf-8") in headers
    assert not any(name == "ce_datacontenttype" for name, _ in headers)


@pytest.mark.parametrize(("event", "topic", "reason"), [
    (event_with("price.agreed", price="-1"), None, "invalid_data: data.price"),
    (envelope("price.agreed", type="price.haggled"), None, "unknown_type"),
    (envelope("decision.made"), "erp.agreements", "wrong_topic"),
    (envelope("decision.made", id=""), None, "invalid_envelope: id"),
])
def test_a_line_the_service_would_dead_letter_is_a_problem_with_its_reason(event, topic, reason):
    for binary in (False, True):
        with pytest.raises(LineProblem) as info:
            prepare_line(_line(event), topic=topic, binary=binary)
        assert str(info.value).startswith(reason), str(info.value)


def test_another_topic_than_an_input_topic_takes_any_type():
    message = prepare_line(_line(envelope("decision.made")), topic="t-test-inputs")
    assert message.topic == "t-test-inputs"


def _lines(valid: int, invalid: int) -> list[bytes]:
    good = [_line(envelope("decision.made", id=f"ok-{i}")) for i in range(valid)]
    bad = [b"not json"] * invalid
    return good + [b"", b"   "] + bad


def test_a_dry_run_checks_everything_lists_ten_reasons_and_counts_the_rest():
    progress = []
    report = asyncio.run(replay_file("127.0.0.1:1", _lines(5, 13), dry_run=True, on_progress=progress.append,
                                     chunk=4))
    assert (report.published, report.valid, report.skipped, report.unlisted) == (0, 5, 13, 3)
    assert len(report.problems) == 10
    assert report.problems[0] == "line 8: invalid_json: not JSON: Expecting value: line 1 column 1 (char 0)"
    assert sum(progress) == 20


def test_mixed_mode_draws_both_modes_reproducibly():
    lines = _lines(200, 0)
    first = asyncio.run(replay_file("127.0.0.1:1", lines, mode="mixed", seed=5, dry_run=True))
    again = asyncio.run(replay_file("127.0.0.1:1", lines, mode="mixed", seed=5, dry_run=True))
    assert first.modes == again.modes
    assert 60 < first.modes["binary"] < 140 and first.modes["binary"] + first.modes["structured"] == 200
    assert asyncio.run(replay_file("127.0.0.1:1", lines, mode="binary", dry_run=True)).modes == {"binary": 200}


def test_the_commands_modes_are_the_replays():
    assert tuple(m.value for m in ContentMode) == REPLAY_MODES


def test_the_command_exits_1_on_skipped_lines_unless_told_to_skip_them(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(_lines(3, 12)))
    runner = CliRunner()
    result = runner.invoke(app, ["replay", str(path), "--dry-run", "--mode", "binary"])
    assert result.exit_code == 1, result.output
    assert "dry run: 3 valid events (3 binary); nothing published" in result.output
    assert "skipped 12 lines:" in result.output and "… and 2 more" in result.output
    assert result.output.count("invalid_json: not JSON") == 10
    result = runner.invoke(app, ["replay", str(path), "--dry-run", "--skip-invalid"])
    assert result.exit_code == 0, result.output
    path.write_bytes(b"\n".join(_lines(3, 0)))
    assert runner.invoke(app, ["replay", str(path), "--dry-run"]).exit_code == 0

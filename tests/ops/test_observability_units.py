"""The pure parts of observability: output counting, latency bookkeeping, JSON logs, masking."""

from __future__ import annotations

import io
import json
import logging

from services.observability.batch_summary import summarise_outputs
from services.observability.errors import explain, mask_password
from services.observability.latency import PublishLatency
from services.observability.logs import setup_logging
from services.observability.metrics import END_TO_END


def alert(status: str, rule: str = "key_account_dunning") -> str:
    return json.dumps({"alert_id": "x", "status": status, "rule": rule})


def test_outputs_are_counted_by_status_rule_and_action():
    rows = [(1, "kam.alerts", "k", alert("open")), (2, "kam.alerts", "k", alert("open", "scarce_stock_allocation")),
            (3, "kam.alerts", "k", alert("resolved")), (4, "kam.alerts", "k", alert("waived")),
            (5, "kam.instructions", "r", json.dumps({"action": "hold"})), (6, "kam.notices", "a", "{}"),
            (7, "kam.dlq", None, "not even json")]
    summary = summarise_outputs(rows)
    assert (summary.opened, summary.resolved, summary.escalated) == (2, 2, 0)
    assert summary.opened_by_rule == {"key_account_dunning": 1, "scarce_stock_allocation": 1}
    assert summary.instructions == {"hold": 1} and summary.notices == 1


def test_latency_is_observed_once_per_output_when_its_batch_is_published():
    now = [100.0]
    tracker = PublishLatency(clock=lambda: now[0])
    before = END_TO_END._sum.get(), sum(b.get() for b in END_TO_END._buckets)
    tracker.committed([(10, "kam.alerts", "k", "{}"), (11, "kam.alerts", "k", "{}")], received_at=99.0)
    tracker.committed([(12, "kam.alerts", "k", "{}")], received_at=99.5)
    now[0] = 100.25
    tracker.published([(10, "", "", ""), (11, "", "", "")])  # the first batch only
    assert END_TO_END._sum.get() - before[0] == 2 * 1.25
    now[0] = 101.0
    tracker.published([(12, "", "", "")])
    assert END_TO_END._sum.get() - before[0] == 2 * 1.25 + 1.5
    assert sum(b.get() for b in END_TO_END._buckets) - before[1] == 3


def test_json_lines_have_stable_keys_and_startup_noise_is_muted():
    stream = io.StringIO()
    setup_logging("INFO", "json", stream=stream)
    try:
        logging.getLogger("onevoice.batch").info("batch: %d events", 3, extra={"fields": {"events": 3}})
        logging.getLogger("aiokafka.consumer.group_coordinator").error(
            "Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError")
        logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")
    finally:
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 1
    assert list(lines[0])[:4] == ["ts", "level", "logger", "message"]
    assert lines[0]["events"] == 3 and lines[0]["message"] == "batch: 3 events"


def test_passwords_are_masked_in_every_explanation():
    assert mask_password("postgresql://kam:hunter2@db:5432/x and smtp://a:b@c") == \
        "postgresql://kam:***@db:5432/x and smtp://a:***@c"

    class Settings:
        database_url = "postgresql://kam:hunter2@db:5432/x"

    message = explain(RuntimeError('connection failed: FATAL:  password authentication failed for user "kam"'),
                      Settings())
    assert "hunter2" not in message and "kam:***@db" in message and "ONEVOICE_DATABASE_URL" in message
    assert explain(RuntimeError("something else entirely")) is None


def test_observing_a_latency_many_times_at_once_counts_as_observing_it_each_time():
    from prometheus_client import CollectorRegistry, Histogram

    from services.observability.latency import observe_times

    registry = CollectorRegistry()
    one_by_one = Histogram("one_by_one", "", buckets=(0.01, 0.1, 1), registry=registry)
    at_once = Histogram("at_once", "", buckets=(0.01, 0.1, 1), registry=registry)
    for amount, times in ((0.05, 3), (0.005, 2), (7.0, 4)):
        for _ in range(times):
            one_by_one.observe(amount)
        observe_times(at_once, amount, times)

    def samples(name):
        return {(s.name.replace(name, ""), tuple(sorted(s.labels.items()))): s.value
                for metric in registry.collect() if metric.name == name for s in metric.samples
                if not s.name.endswith("_created")}

    assert samples("one_by_one") == samples("at_once")

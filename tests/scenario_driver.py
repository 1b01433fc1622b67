"""Drive a shared scenario straight through the processor and timer (no Kafka): fast rule checks, and the
outputs notify's tests feed on (tests/notify/scenario_alerts.py)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select

from services.config import Settings
from services.inputs import InputRecord
from services.processor import Processor
from services.scenarios import decision_event, message_bytes, summarise
from services.store import tables as t
from services.store.db import create_tables, make_engine
from services.timers import EscalationTimer


class Clock:
    def __init__(self, start: datetime = datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)):
        self.now = start

    def __call__(self):
        return self.now


def outputs_in_process(scenario: dict, database_url: str, *, clock: Clock | None = None,
                     prefix: str = "") -> list[tuple[str, dict]]:
    """Run one scenario on `database_url`: (topic, message) of each output it made, in order. The store may hold
    other scenarios' data (only this run's outputs count); `prefix` goes before its decision events' ids."""
    window = scenario.get("window_s") or 172800
    settings = Settings(database_url=database_url, decision_window_s=window)
    engine = make_engine(database_url)
    create_tables(engine)
    clock = clock or Clock()
    processor = Processor(engine, settings, clock=clock)
    timer = EscalationTimer(engine, settings, clock=clock)
    offsets: dict[str, int] = {}
    with engine.connect() as conn:
        start = conn.execute(select(func.coalesce(func.max(t.outbox.c.id), 0))).scalar_one()

    def outputs():
        with engine.connect() as conn:
            rows = conn.execute(select(t.outbox).where(t.outbox.c.id > start).order_by(t.outbox.c.id)).all()
        return [(r.topic, json.loads(r.value)) for r in rows]

    def record(topic, key, value):
        offset = offsets.get(topic, 0)
        offsets[topic] = offset + 1
        return InputRecord(topic, 0, offset, key, value)

    for index, step in enumerate(scenario["steps"]):
        clock.now += timedelta(seconds=1)
        if "publish" in step:
            processor.process([record(*message_bytes(entry)) for entry in step["publish"]])
        elif "decide" in step:
            decide = step["decide"]
            alert_ids = [v["alert_id"] for topic, v in outputs()
                         if topic == "kam.alerts" and v["fingerprint"] == decide["fingerprint"]]
            alert_id = alert_ids[-1] if alert_ids else f"unknown-{index}"
            event = decision_event(f"{prefix}{scenario['name']}", index, alert_id, decide)
            processor.process([record("kam.decisions", alert_id.encode(), json.dumps(event).encode())])
        elif step.get("advance"):
            clock.now += timedelta(seconds=window + 1)
            timer.escalate_due()
    result = outputs()
    engine.dispose()
    return result


def run_in_process(scenario: dict, database_url: str) -> dict:
    result = outputs_in_process(scenario, database_url)
    return summarise(*([v for tp, v in result if tp == topic]
                       for topic in ("kam.alerts", "kam.instructions", "kam.dlq", "kam.notices")))

"""The kam.alerts and kam.notices messages the public scenarios produce, made by the real processor.

Each shared scenario runs in process (as tests/scenario_driver.py does) on the given store, with an
e-mail address added to every team member (`<person>@example.test`) so notifications can reach
them; the store then holds the teams and key accounts notify looks names and addresses up in, and
the outbox holds the messages to feed it.
"""

from __future__ import annotations

import copy
import glob
import json
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from services.config import Settings
from services.inputs import InputRecord
from services.processor import Processor
from services.scenarios import decision_event, message_bytes
from services.store import tables as t
from services.store.db import create_tables, make_engine
from services.timers import EscalationTimer

SCENARIOS = "/work/shared/scenarios"


def public_scenarios() -> list[dict]:
    return [json.load(open(path)) for path in sorted(glob.glob(f"{SCENARIOS}/*.json"))]


def with_addresses(scenario: dict, no_address: frozenset[str] = frozenset()) -> dict:
    scenario = copy.deepcopy(scenario)
    for step in scenario["steps"]:
        for entry in step.get("publish", []):
            value = entry.get("value")
            if isinstance(value, dict) and value.get("type") == "team.member_assigned":
                person = value["data"].get("person_id")
                if person and person not in no_address:
                    value["data"]["email"] = f"{person}@example.test"
    return scenario


def scenario_outputs(scenario: dict, database_url: str, prefix: str) -> tuple[list[dict], list[dict]]:
    """Run one scenario on `database_url`; its alerts and notices, ids prefixed so scenarios can share a store."""
    window = scenario.get("window_s") or 172800
    settings = Settings(database_url=database_url, decision_window_s=window)
    engine = make_engine(database_url)
    create_tables(engine)
    now = [datetime.now(timezone.utc) - timedelta(days=3)]
    clock = lambda: now[0]  # noqa: E731
    processor = Processor(engine, settings, clock=clock)
    timer = EscalationTimer(engine, settings, clock=clock)
    offsets: dict[str, int] = {}
    start = _last_outbox_id(engine)

    def outputs():
        with engine.connect() as conn:
            rows = conn.execute(select(t.outbox).where(t.outbox.c.id > start).order_by(t.outbox.c.id)).all()
        return [(r.topic, json.loads(r.value)) for r in rows]

    def record(topic, key, value):
        offset = offsets.get(topic, 0)
        offsets[topic] = offset + 1
        return InputRecord(topic, 0, offset, key, value)

    for index, step in enumerate(scenario["steps"]):
        now[0] += timedelta(seconds=1)
        if "publish" in step:
            processor.process([record(*message_bytes(entry)) for entry in step["publish"]])
        elif "decide" in step:
            decide = step["decide"]
            ids = [v["alert_id"] for topic, v in outputs() if topic == "kam.alerts"
                   and v["fingerprint"] == decide["fingerprint"]]
            event = decision_event(f"{prefix}{scenario['name']}", index, ids[-1] if ids else f"unknown-{index}", decide)
            processor.process([record("kam.decisions", b"k", json.dumps(event).encode())])
        elif step.get("advance"):
            now[0] += timedelta(seconds=window + 1)
            timer.escalate_due()
    result = outputs()
    engine.dispose()
    return ([v for topic, v in result if topic == "kam.alerts"], [v for topic, v in result if topic == "kam.notices"])


def _last_outbox_id(engine) -> int:
    from sqlalchemy import func

    with engine.connect() as conn:
        return conn.execute(select(func.coalesce(func.max(t.outbox.c.id), 0))).scalar_one()


def all_public_outputs(database_url: str, no_address: frozenset[str] = frozenset()) -> tuple[list[dict], list[dict]]:
    """Every scenario on its own store would lose the teams; they share one: their account ids do not collide."""
    alerts, notices = [], []
    for scenario in public_scenarios():
        a, n = scenario_outputs(with_addresses(scenario, no_address), database_url, prefix="")
        alerts += a
        notices += n
    return alerts, notices

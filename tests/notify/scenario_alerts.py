"""The kam.alerts and kam.notices messages the public scenarios produce, made by the real processor.

Each shared scenario runs in process (tests/scenario_driver.py) on the given store, with an
e-mail address added to every team member (`<person>@example.test`) so notifications can reach
them; the store then holds the teams and key accounts notify looks names and addresses up in, and
the outbox holds the messages to feed it.
"""

from __future__ import annotations

import copy
import glob
import json
from datetime import datetime, timedelta, timezone

from tests.scenario_driver import Clock, outputs_in_process

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
    result = outputs_in_process(scenario, database_url, clock=Clock(datetime.now(timezone.utc) - timedelta(days=3)),
                                prefix=prefix)
    return ([v for topic, v in result if topic == "kam.alerts"], [v for topic, v in result if topic == "kam.notices"])


def all_public_outputs(database_url: str, no_address: frozenset[str] = frozenset()) -> tuple[list[dict], list[dict]]:
    """Every scenario on its own store would lose the teams; they share one: their account ids do not collide."""
    alerts, notices = [], []
    for scenario in public_scenarios():
        a, n = scenario_outputs(with_addresses(scenario, no_address), database_url, prefix="")
        alerts += a
        notices += n
    return alerts, notices

"""Every shared scenario through the real broker and a running service with its events sent by the
official CloudEvents SDK: all in binary content mode, and binary and structured mixed at random
(seeded) — the outputs must be exactly the scenario's expectation either way (CONTRACT §2).
"""

import uuid

import pytest

from consumers.live_scenarios import run_scenario_live
from services.scenarios import bundled_scenarios, normalised_expectation

SCENARIOS = {s["name"]: s for s in bundled_scenarios()}


def _events_sent_by_the_sdk(scenario: dict) -> int:
    """Every message of the scenario the SDK can carry: valid envelopes, and one decision per decide step."""
    from services.devkit.scenario_runner import _is_cloud_event

    entries = [e for step in scenario["steps"] for e in step.get("publish", [])]
    return (sum(1 for e in entries if "raw" not in e and _is_cloud_event(e["value"]))
            + sum(1 for step in scenario["steps"] if "decide" in step))


@pytest.mark.kafka
@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_scenario_with_every_event_in_binary_mode(name, kafka_bootstrap, sqlite_url):
    scenario = SCENARIOS[name]
    run = await run_scenario_live(scenario, bootstrap=kafka_bootstrap, database_url=sqlite_url,
                                  group_id=f"e2e-bin-{uuid.uuid4().hex[:8]}", mode="binary")
    assert run.modes["sdk binary"] == _events_sent_by_the_sdk(scenario)
    assert run.modes["sdk structured"] == 0
    assert run.summary == normalised_expectation(scenario)


@pytest.mark.kafka
@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_scenario_with_content_modes_mixed_at_random(name, kafka_bootstrap, sqlite_url):
    scenario = SCENARIOS[name]
    seed = sum(name.encode())  # a different draw per scenario, the same on every run
    run = await run_scenario_live(scenario, bootstrap=kafka_bootstrap, database_url=sqlite_url,
                                  group_id=f"e2e-mix-{uuid.uuid4().hex[:8]}", mode="mixed", seed=seed)
    assert run.modes["sdk binary"] + run.modes["sdk structured"] == _events_sent_by_the_sdk(scenario)
    assert run.summary == normalised_expectation(scenario)


def test_the_mixed_draws_use_both_modes_over_the_scenarios():
    from services.devkit.scenario_runner import ScenarioPublisher

    totals = {"sdk binary": 0, "sdk structured": 0}
    for name, scenario in SCENARIOS.items():
        publisher = ScenarioPublisher("mixed", seed=sum(name.encode()))
        for step in scenario["steps"]:
            for entry in step.get("publish", []):
                publisher.entry(entry)
        for key in totals:
            totals[key] += publisher.modes[key]
    assert min(totals.values()) >= 10, totals

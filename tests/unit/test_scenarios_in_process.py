"""Every shared scenario through the real processor and store (SQLite), without Kafka."""

import pytest

from services.scenarios import bundled_scenarios, normalised_expectation
from tests.scenario_driver import run_in_process

SCENARIOS = {s["name"]: s for s in bundled_scenarios()}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_in_process(name, tmp_path):
    scenario = SCENARIOS[name]
    assert run_in_process(scenario, f"sqlite:///{tmp_path}/s.db") == normalised_expectation(scenario)

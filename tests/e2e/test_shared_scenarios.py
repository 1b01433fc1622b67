"""Every shared scenario through the real Apache Kafka broker and a running service, on SQLite and PostgreSQL.

Each run has its own consumer group (started at the end of the input topics) and its own
database, so scenarios share one broker without seeing each other's messages.
"""

import uuid

import pytest

from consumers.live_scenarios import run_scenario_live
from services.scenarios import bundled_scenarios, normalised_expectation

SCENARIOS = {s["name"]: s for s in bundled_scenarios()}


@pytest.mark.kafka
@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_scenario_on_sqlite(name, kafka_bootstrap, sqlite_url):
    run = await run_scenario_live(SCENARIOS[name], bootstrap=kafka_bootstrap, database_url=sqlite_url,
                                  group_id=f"e2e-{uuid.uuid4().hex[:8]}")
    assert run.summary == normalised_expectation(SCENARIOS[name])


@pytest.mark.kafka
@pytest.mark.postgres
@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_scenario_on_postgres(name, kafka_bootstrap, postgres_database):
    run = await run_scenario_live(SCENARIOS[name], bootstrap=kafka_bootstrap, database_url=postgres_database,
                                  group_id=f"e2e-{uuid.uuid4().hex[:8]}")
    assert run.summary == normalised_expectation(SCENARIOS[name])

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
@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_scenario(name, database, kafka_bootstrap, request):
    url = request.getfixturevalue("sqlite_url" if database == "sqlite" else "postgres_database")
    run = await run_scenario_live(SCENARIOS[name], bootstrap=kafka_bootstrap, database_url=url,
                                  group_id=f"e2e-{uuid.uuid4().hex[:8]}")
    assert run.summary == normalised_expectation(SCENARIOS[name])

"""Every shared scenario through the real processor and store (SQLite), without Kafka."""

import pytest

from services.scenarios import bundled_scenarios, normalised_expectation
from tests.scenario_driver import run_in_process

SCENARIOS = {s["name"]: s for s in bundled_scenarios()}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_in_process(name, tmp_path):
    scenario = SCENARIOS[name]
    assert run_in_process(scenario, f"sqlite:///{tmp_path}/s.db") == normalised_expectation(scenario)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_output_fits_the_contract_models(name, tmp_path):
    """What the processor writes to the outbox validates against the §6 output models."""
    import json

    from sqlalchemy import select

    from schemas.export import OUTPUT_MODELS
    from services.store import tables as t
    from services.store.db import make_engine

    url = f"sqlite:///{tmp_path}/s.db"
    run_in_process(SCENARIOS[name], url)
    models = OUTPUT_MODELS
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(select(t.outbox)).all()
    engine.dispose()
    assert rows
    for row in rows:
        models[row.topic].model_validate(json.loads(row.value))


def test_the_bundled_scenarios_are_the_shared_ones():
    """The demo and the in-process tests use copies of ../shared/scenarios: they must not drift apart."""
    from pathlib import Path

    shared = Path(__file__).resolve().parents[3] / "shared" / "scenarios"
    if not shared.is_dir():
        pytest.skip(f"no shared scenarios beside the checkout ({shared})")
    bundled = Path(__file__).resolve().parents[2] / "services" / "demo_scenarios"
    shared_files = {p.name: p.read_bytes() for p in shared.glob("*.json")}
    bundled_files = {p.name: p.read_bytes() for p in bundled.glob("*.json")}
    assert sorted(bundled_files) == sorted(shared_files)
    for name, content in shared_files.items():
        assert bundled_files[name] == content, f"services/demo_scenarios/{name} differs from {shared / name}"

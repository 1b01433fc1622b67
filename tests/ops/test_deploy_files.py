"""The dashboard and the alerting rules in deploy/ name only series onevoice really exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import services.observability.metrics  # noqa: F401  (registers the series)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SUFFIXES = ("_total", "_bucket", "_sum", "_count")


def exposed_series() -> set[str]:
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("onevoice_"):
            names.add(family.name)
            names.update(family.name + suffix for suffix in SUFFIXES)
    return names


def referenced(text: str) -> set[str]:
    return set(re.findall(r"\bonevoice_[a-z_]+\b", text))


def test_dashboard_queries_name_real_series():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "onevoice.json").read_text())
    expressions = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    names = referenced(expressions)
    assert len(names) >= 10
    assert names <= exposed_series(), names - exposed_series()


def test_alerting_rules_name_real_series_and_cover_the_failures():
    rules = (DEPLOY / "onevoice-alerts.yml").read_text()
    assert referenced(rules) - {"onevoice"} <= exposed_series(), referenced(rules) - exposed_series()
    for alert in ("OnevoiceConsumerLagGrowing", "OnevoiceOutboxStuck", "OnevoiceDeadLettersRising",
                  "OnevoiceEscalationsDue"):
        assert f"alert: {alert}" in rules
    assert "onevoice-alerts.yml" in (DEPLOY / "prometheus.yml").read_text()

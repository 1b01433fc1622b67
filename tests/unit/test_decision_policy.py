"""The decision policy (CONTRACT §5, "Decisions") as one pure function, shared by the processor and the inbox,
and the contract's rule names defined once."""

from __future__ import annotations

from typing import get_args

import pytest

from schemas.export import OUTPUT_MODELS
from schemas.outputs import RuleName
from services.domain import Team, TeamMember
from services.rules.agreements import CONFLICT_RULES
from services.rules.alerts import DECISIONS, allowed_decisions, refuse_decision
from services.rules.exceptions import DUNNING_RULE, STOCK_RULE
from services.rules.notices import HANDOVER_RULE

TEAM = Team((TeamMember("p-g", "global_kam"), TeamMember("p-l", "local_kam", "IT"), TeamMember("p-s", "senior_kam"),
             TeamMember("p-x", "executive_sponsor"), TeamMember("p-f", "finance"), TeamMember("p-t", "technical"),
             TeamMember("p-c", "country_manager", "IT"), TeamMember("p-sales", "sales", "IT")))


def allowed(person: str, rule: str = "unauthorized_commitment", status: str = "open") -> tuple[str, ...]:
    return allowed_decisions(person, rule=rule, status=status, key_account_id="K", team=TEAM)


@pytest.mark.parametrize("person", ["p-g", "p-l", "p-s", "p-x"])
def test_kams_senior_kams_and_sponsors_decide(person):
    assert allowed(person) == ("acknowledge", "resolve", "waive")
    assert allowed(person, rule=DUNNING_RULE) == DECISIONS


@pytest.mark.parametrize("person", ["p-f", "p-t", "p-c", "p-sales", "p-outsider"])
def test_nobody_else_decides(person):
    assert allowed(person) == ()
    refusal = refuse_decision("resolve", person, rule=DUNNING_RULE, status="open", key_account_id="K", team=TEAM)
    assert refusal.code == "unauthorized_decision" and person in refusal.message


@pytest.mark.parametrize("status", ["resolved", "waived"])
def test_a_closed_alert_takes_no_decision(status):
    assert allowed("p-g", status=status) == ()
    assert refuse_decision("acknowledge", "p-g", rule=STOCK_RULE, status=status, key_account_id="K",
                           team=TEAM).code == "invalid_decision"


@pytest.mark.parametrize("status", ["open", "acknowledged", "escalated"])
def test_an_alert_still_open_takes_decisions(status):
    assert "resolve" in allowed("p-g", status=status)


def test_the_checks_come_in_the_contracts_order():
    """Unauthorized before closed before "dunning only": the first failure is the one reported."""
    outsider_on_closed = refuse_decision("release", "p-f", rule=STOCK_RULE, status="resolved", key_account_id="K",
                                         team=TEAM)
    assert outsider_on_closed.code == "unauthorized_decision"
    release_on_closed = refuse_decision("release", "p-g", rule=STOCK_RULE, status="resolved", key_account_id="K",
                                        team=TEAM)
    assert (release_on_closed.code, "already resolved" in release_on_closed.message) == ("invalid_decision", True)
    release_on_conflict = refuse_decision("release", "p-g", rule=STOCK_RULE, status="open", key_account_id="K",
                                          team=TEAM)
    assert release_on_conflict.code == "invalid_decision" and "dunning alerts only" in release_on_conflict.message


def test_rule_names_are_the_output_schemas():
    produced = {*CONFLICT_RULES, DUNNING_RULE, STOCK_RULE, HANDOVER_RULE}
    assert produced == set(get_args(RuleName))
    schema = OUTPUT_MODELS["kam.alerts"].model_json_schema()
    assert set(schema["properties"]["rule"]["enum"]) == produced

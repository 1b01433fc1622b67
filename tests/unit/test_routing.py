"""Routing policy of CONTRACT §5: assignee (G and L orders), escalation target, recipients."""

from __future__ import annotations

import pytest

from services.domain import Team, TeamMember
from services.routing import (
    country_recipients,
    escalation_target,
    finance_recipients,
    global_assignee,
    local_assignee,
    people_recipients,
)

FALLBACK = "kam-desk"


def team(*members: tuple) -> Team:
    return Team(tuple(TeamMember(*m) for m in members))


# -- G order -----------------------------------------------------------------------------

def test_global_order_prefers_global_kam():
    t = team(("sen", "senior_kam"), ("gk", "global_kam"), ("lk", "local_kam", "IT"))
    assert global_assignee(t, FALLBACK) == "gk"


def test_global_order_falls_back_to_senior_kam():
    t = team(("sen", "senior_kam"), ("lk", "local_kam", "IT"), ("es", "executive_sponsor"))
    assert global_assignee(t, FALLBACK) == "sen"


def test_global_order_falls_back_to_desk_without_global_or_senior_kam():
    t = team(("lk", "local_kam", "IT"), ("es", "executive_sponsor"), ("fin", "finance"))
    assert global_assignee(t, FALLBACK) == FALLBACK
    assert global_assignee(Team(), "other-desk") == "other-desk"


def test_global_order_smallest_person_id_among_equals():
    t = team(("gk-b", "global_kam"), ("gk-c", "global_kam"), ("gk-a", "global_kam"))
    assert global_assignee(t, FALLBACK) == "gk-a"
    t = team(("s2", "senior_kam"), ("s10", "senior_kam"), ("s1", "senior_kam"))
    assert global_assignee(t, FALLBACK) == "s1"  # string order: "s1" < "s10" < "s2"


# -- L order -----------------------------------------------------------------------------

def test_local_order_prefers_local_kam_of_the_country():
    t = team(("gk", "global_kam"), ("lk-de", "local_kam", "DE"), ("lk-it", "local_kam", "IT"))
    assert local_assignee(t, "IT", FALLBACK) == "lk-it"
    assert local_assignee(t, "DE", FALLBACK) == "lk-de"


def test_local_order_smallest_person_id_among_local_kams_of_the_country():
    t = team(("lk-z", "local_kam", "IT"), ("lk-m", "local_kam", "IT"), ("lk-a", "local_kam", "DE"))
    assert local_assignee(t, "IT", FALLBACK) == "lk-m"


def test_local_order_falls_back_to_global_order():
    t = team(("sen", "senior_kam"), ("lk-de", "local_kam", "DE"))
    assert local_assignee(t, "IT", FALLBACK) == "sen"
    assert local_assignee(t, None, FALLBACK) == "sen"
    assert local_assignee(team(("lk-de", "local_kam", "DE")), "FR", FALLBACK) == FALLBACK


def test_local_order_ignores_country_of_other_roles():
    t = team(("cm-it", "country_manager", "IT"), ("sales-it", "sales", "IT"), ("gk", "global_kam"))
    assert local_assignee(t, "IT", FALLBACK) == "gk"


def test_local_kam_without_country_is_not_local_to_any_country():
    t = team(("lk", "local_kam"), ("gk", "global_kam"))
    assert local_assignee(t, "IT", FALLBACK) == "gk"


# -- escalation ----------------------------------------------------------------------------

def test_escalation_goes_to_senior_kam():
    t = team(("gk", "global_kam"), ("sen", "senior_kam"), ("es", "executive_sponsor"))
    assert escalation_target(t, "gk", FALLBACK) == "sen"
    assert escalation_target(t, "lk-it", FALLBACK) == "sen"
    assert escalation_target(t, FALLBACK, FALLBACK) == "sen"


def test_escalation_goes_to_executive_sponsor_when_assignee_is_senior_kam():
    t = team(("sen", "senior_kam"), ("es", "executive_sponsor"))
    assert escalation_target(t, "sen", FALLBACK) == "es"


def test_escalation_goes_to_executive_sponsor_without_senior_kam():
    t = team(("gk", "global_kam"), ("es-b", "executive_sponsor"), ("es-a", "executive_sponsor"))
    assert escalation_target(t, "gk", FALLBACK) == "es-a"


def test_escalation_falls_back_without_sponsor():
    assert escalation_target(team(("sen", "senior_kam")), "sen", FALLBACK) == FALLBACK
    assert escalation_target(team(("gk", "global_kam")), "gk", FALLBACK) == FALLBACK
    assert escalation_target(Team(), FALLBACK, FALLBACK) == FALLBACK


def test_escalation_senior_kam_is_smallest_person_id():
    t = team(("sen-b", "senior_kam"), ("sen-a", "senior_kam"), ("es", "executive_sponsor"))
    assert escalation_target(t, "gk", FALLBACK) == "sen-a"
    # the assignee is the senior KAM of the G order (sen-a) -> sponsor
    assert escalation_target(t, "sen-a", FALLBACK) == "es"


# -- recipients -------------------------------------------------------------------------

def test_country_recipients_assignee_plus_country_manager_and_local_kam_of_country():
    t = team(("gk", "global_kam"), ("cm-it", "country_manager", "IT"), ("lk-it", "local_kam", "IT"),
             ("lk-de", "local_kam", "DE"), ("cm-de", "country_manager", "DE"), ("sales-it", "sales", "IT"),
             ("fin", "finance"))
    assert country_recipients(t, "gk", "IT") == ("cm-it", "gk", "lk-it")
    assert country_recipients(t, "gk", None) == ("gk",)


def test_country_recipients_sorted_and_without_duplicates():
    t = team(("lk-it", "local_kam", "IT"), ("lk-it", "country_manager", "IT"), ("a", "local_kam", "IT"))
    assert country_recipients(t, "z", "IT") == ("a", "lk-it", "z")
    assert country_recipients(t, "lk-it", "IT") == ("a", "lk-it")


def test_people_recipients_assignee_plus_named_people_sorted():
    assert people_recipients("gk", ["pb", "pa", None, "gk"]) == ("gk", "pa", "pb")


@pytest.mark.parametrize("assignee", ["lk-it", "gk", FALLBACK])
def test_finance_recipients_assignee_plus_finance_members(assignee):
    t = team(("gk", "global_kam"), ("fin-b", "finance"), ("fin-a", "finance", "IT"), ("lk-it", "local_kam", "IT"))
    assert finance_recipients(t, assignee) == tuple(sorted({assignee, "fin-a", "fin-b"}))

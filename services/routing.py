"""Who gets an alert, who else hears of it, and who it escalates to (CONTRACT §5).

Pure functions over a key account's team, so the routing policy can be read and
tested in one place.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.domain import Team


def global_assignee(team: Team, fallback: str) -> str:
    """G order: the global KAM, else the senior KAM, else the fallback desk."""
    return team.first("global_kam") or team.first("senior_kam") or fallback


def local_assignee(team: Team, country: str | None, fallback: str) -> str:
    """L order: the local KAM of the country concerned, else the G order."""
    if country is not None:
        local = team.first("local_kam", country)
        if local:
            return local
    return global_assignee(team, fallback)


def escalation_target(team: Team, assignee: str, fallback: str) -> str:
    """The senior KAM, or the executive sponsor where the senior KAM already has it (or none exists)."""
    senior = team.first("senior_kam")
    if senior and senior != assignee:
        return senior
    return team.first("executive_sponsor") or fallback


def country_recipients(team: Team, assignee: str, country: str | None) -> tuple[str, ...]:
    """Price and promotion rules: the assignee plus the country manager and local KAM of the country."""
    people = {assignee}
    if country is not None:
        people.update(m.person_id for m in team.with_role("country_manager", country))
        people.update(m.person_id for m in team.with_role("local_kam", country))
    return tuple(sorted(people))


def people_recipients(assignee: str, others: Iterable[str | None]) -> tuple[str, ...]:
    """The assignee plus named persons (both `agreed_by` of a service conflict, for instance)."""
    return tuple(sorted({assignee, *(p for p in others if p)}))


def finance_recipients(team: Team, assignee: str) -> tuple[str, ...]:
    """Dunning: the assignee plus the team's finance members."""
    return people_recipients(assignee, (m.person_id for m in team.with_role("finance")))

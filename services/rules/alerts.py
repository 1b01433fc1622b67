"""Who may decide what on an alert, and what a decision does to it (CONTRACT §5, "Decisions").

One pure policy for every place a decision can come from: the processor applies it to each
`decision.made`, and the inbox uses the same functions to offer a person only the decisions
the processor will accept.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.domain import CLOSED_STATUSES, DECIDING_ROLES, Team
from services.rules.exceptions import DUNNING_RULE

DECISIONS = ("acknowledge", "resolve", "waive", "release", "proceed")
DUNNING_ONLY = frozenset({"release", "proceed"})
STATUS_AFTER = {"acknowledge": "acknowledged", "resolve": "resolved", "waive": "waived",
                "release": "resolved", "proceed": "resolved"}


@dataclass(frozen=True)
class Refusal:
    """Why a decision is refused: the dead-letter code of CONTRACT §6 and a sentence for people."""

    code: str  # unauthorized_decision | invalid_decision
    message: str


def may_decide(team: Team, person_id: str) -> bool:
    """Only the key account's KAMs, senior KAMs and executive sponsors decide its alerts."""
    return any(member.role in DECIDING_ROLES for member in team.roles_of(person_id))


def refuse_decision(decision: str, person_id: str, *, rule: str, status: str, key_account_id: str,
                    team: Team) -> Refusal | None:
    """The first reason (in the contract's order) this decision cannot be applied, or None."""
    if not may_decide(team, person_id):
        return Refusal("unauthorized_decision", f"{person_id!r} is not a KAM, senior KAM or executive sponsor "
                                                f"of {key_account_id}")
    if status in CLOSED_STATUSES:
        return Refusal("invalid_decision", f"the alert is already {status}")
    if decision in DUNNING_ONLY and rule != DUNNING_RULE:
        return Refusal("invalid_decision", f"{decision!r} applies to dunning alerts only, not {rule}")
    return None


def allowed_decisions(person_id: str, *, rule: str, status: str, key_account_id: str, team: Team) -> tuple[str, ...]:
    """The decisions this person may take on the alert now, in the contract's order (none if closed)."""
    return tuple(d for d in DECISIONS if refuse_decision(d, person_id, rule=rule, status=status,
                                                         key_account_id=key_account_id, team=team) is None)

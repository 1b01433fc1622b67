"""crm.accounts: key-account master data (CONTRACT §3)."""

from __future__ import annotations

from typing import Literal

from .base import InputModel
from .types import Country, Email, Id, Name

__all__ = ["Tier", "TeamRole", "AccountUpserted", "TeamMemberAssigned", "TeamMemberRemoved"]

Tier = Literal["none", "key", "international_key", "strategic", "corporate_strategic"]
TeamRole = Literal[
    "global_kam",
    "local_kam",
    "senior_kam",
    "sales",
    "technical",
    "finance",
    "country_manager",
    "executive_sponsor",
]


class AccountUpserted(InputModel):
    """``account.upserted``"""

    account_id: Id
    name: Name
    parent_id: Id | None = None
    country: Country
    tier: Tier


class _TeamMember(InputModel):
    account_id: Id
    person_id: Id
    role: TeamRole
    name: Name | None = None
    email: Email | None = None
    country: Country | None = None


class TeamMemberAssigned(_TeamMember):
    """``team.member_assigned``"""


class TeamMemberRemoved(_TeamMember):
    """``team.member_removed``"""

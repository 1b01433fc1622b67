"""The business model as plain values: accounts, teams, agreements, promotions, findings.

Nothing here knows about Kafka or a database; rules and routing are pure functions
over these types, so they can be tested with no infrastructure at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Literal

from schemas.outputs import CLOSED_STATUSES, Severity  # noqa: F401  (the contract's words, defined once)

TIER_RANK = {"corporate_strategic": 0, "strategic": 1, "international_key": 2, "key": 3, "none": 4}
DECIDING_ROLES = frozenset({"global_kam", "local_kam", "senior_kam", "executive_sponsor"})



@dataclass(frozen=True)
class Account:
    account_id: str
    name: str
    parent_id: str | None
    country: str
    tier: str
    root_id: str

    @property
    def is_key_account_root(self) -> bool:
        return self.root_id == self.account_id and self.tier != "none"


@dataclass(frozen=True)
class TeamMember:
    person_id: str
    role: str
    country: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class Team:
    """The people of one key account, whatever account their assignment named."""

    members: tuple[TeamMember, ...] = ()

    def with_role(self, role: str, country: str | None = None) -> tuple[TeamMember, ...]:
        """The members with `role` (in `country`, if given), by person id."""
        lookups = self._lookups()
        found = lookups.get((role, country))
        if found is None:
            found = lookups[(role, country)] = tuple(sorted(
                (m for m in self.members if m.role == role and (country is None or m.country == country)),
                key=lambda m: m.person_id))
        return found

    def first(self, role: str, country: str | None = None) -> str | None:
        found = self.with_role(role, country)
        return found[0].person_id if found else None

    def roles_of(self, person_id: str) -> tuple[TeamMember, ...]:
        lookups = self._lookups()
        found = lookups.get(person_id)
        if found is None:
            found = lookups[person_id] = tuple(m for m in self.members if m.person_id == person_id)
        return found

    def _lookups(self) -> dict:
        """Answers already given: a team is asked the same few questions for every agreement and alert
        of its key account, and never changes (a changed team is a new Team)."""
        lookups = self.__dict__.get("_answers")
        if lookups is None:
            lookups = {}
            object.__setattr__(self, "_answers", lookups)
        return lookups

    def has(self, person_id: str) -> bool:
        return any(m.person_id == person_id for m in self.members)


@dataclass(frozen=True)
class Agreement:
    """The current version of one agreement (a price, a contract or a service)."""

    agreement_id: str
    version: int
    kind: Literal["price", "contract", "service", "withdrawal"]
    account_id: str | None
    agreed_by: str | None
    valid_from: date | None = None
    valid_to: date | None = None
    scope: str | None = None
    country: str | None = None
    product_id: str | None = None
    price: Decimal | None = None
    currency: str | None = None
    contract_type: str | None = None
    status: str | None = None
    service_id: str | None = None
    charge: str | None = None

    def is_active(self, today: date) -> bool:
        if self.kind == "withdrawal":
            return False
        if self.kind == "contract" and self.status != "signed":
            return False
        return self.valid_to is None or self.valid_to >= today

    @property
    def version_tag(self) -> str:
        return f"{self.agreement_id}@{self.version}"


@dataclass(frozen=True)
class Promotion:
    promotion_id: str
    country: str
    product_id: str
    price: Decimal
    currency: str
    valid_from: date
    valid_to: date
    audience: str
    launched_by: str

    def is_active(self, today: date) -> bool:
        return self.valid_to >= today


@dataclass(frozen=True)
class KeyAccountView:
    """Everything the agreement rules need to judge one key account."""

    key_account: Account
    accounts: dict[str, Account]
    team: Team
    agreements: tuple[Agreement, ...]
    promotions: tuple[Promotion, ...] = ()

    @property
    def countries(self) -> set[str]:
        return {a.country for a in self.accounts.values()}


@dataclass(frozen=True)
class Finding:
    """A conflict or exception a rule found: becomes an alert unless one is already open."""

    rule: str
    key_account_id: str
    account_id: str
    evidence: tuple[str, ...]
    severity: Severity
    assignee: str
    recipients: tuple[str, ...]
    title: str
    detail: str
    data: dict = field(default_factory=dict)
    versions: str = ""

    @property
    def fingerprint(self) -> str:
        return f"{self.rule}:{self.key_account_id}:{'|'.join(sorted(self.evidence))}"


def overlaps(a_from: date | None, a_to: date | None, b_from: date | None, b_to: date | None) -> bool:
    """Inclusive validity overlap; a missing end is open-ended."""
    lo = max(d for d in (a_from, b_from, date.min) if d is not None)
    hi = min(d for d in (a_to, b_to, date.max) if d is not None)
    return lo <= hi


def utcnow() -> datetime:
    """The service's clock (injected wherever time matters, so tests can move it)."""
    return datetime.now(timezone.utc)


def iso(ts: datetime | None) -> str | None:
    """RFC 3339 in UTC with a `Z`, the form every output message uses."""
    if ts is None:
        return None
    return ts.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")

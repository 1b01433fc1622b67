"""Who must inform whom (CONTRACT §5, "notices") and the sales-to-KAM handover (`key_account_handover`).

Pure functions over accounts, teams and agreements: what a notice says and to whom, and
what a handover alert tells the KAM who takes the account over.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from services.domain import Account, Agreement, Finding, Team
from services.routing import global_assignee
from services.rules.agreements import describe

COMMITMENT_KINDS = frozenset({"price", "contract", "service"})
HANDOVER_RULE = "key_account_handover"
LISTED = 50  # agreements, accounts or alerts written out in a handover; the rest are counted


@dataclass(frozen=True)
class NoticeDraft:
    """A notice before it gets its id and time (services/outputs.notice_message adds them)."""

    kind: str
    key_account_id: str
    account_id: str
    about: str
    recipients: tuple[str, ...]
    title: str
    detail: str


def is_commitment(agreement: Agreement) -> bool:
    """A price, a signed contract or a service: what binds the supplier towards the customer."""
    if agreement.kind not in COMMITMENT_KINDS:
        return False
    return agreement.kind != "contract" or agreement.status == "signed"


def commitment_notice(agreement: Agreement, account: Account | None, key_account: Account, team: Team,
                      fallback: str) -> NoticeDraft | None:
    """`commitment_made`: the key account's KAM (and, for a local agreement, the country's local KAMs)
    learn at once what someone else agreed, before they contradict it.

    None for a commitment by one of the key account's global KAMs, or where nobody but its maker
    would be told.
    """
    if not is_commitment(agreement):
        return None
    maker = agreement.agreed_by
    if any(m.role == "global_kam" for m in team.roles_of(maker)):
        return None
    people = {global_assignee(team, fallback)}
    if agreement.scope == "local" and agreement.country is not None:
        people.update(m.person_id for m in team.with_role("local_kam", agreement.country))
    people.discard(maker)
    if not people:
        return None
    where = f" in {agreement.country}" if agreement.scope == "local" and agreement.country else ""
    account_name = account.name if account is not None else agreement.account_id
    return NoticeDraft(
        kind="commitment_made", key_account_id=key_account.account_id, account_id=agreement.account_id,
        about=agreement.agreement_id, recipients=tuple(sorted(people)),
        title=f"{_person(team, maker)} agreed {_what(agreement)} with {account_name}{where}",
        detail=(f"{key_account.name}: {_describe(agreement)} (agreement {agreement.agreement_id}, "
                f"version {agreement.version}), agreed by {_person(team, maker)}{_roles(team, maker)} "
                f"for {account_name} ({agreement.account_id}){where}."))


def tier_change_notice(kind: str, key_account: Account, team: Team, fallback: str, old_tier: str) -> NoticeDraft:
    """`key_account_promoted` / `key_account_demoted`: the whole team hears it (the desk if there is none)."""
    people = tuple(sorted({m.person_id for m in team.members})) or (fallback,)
    promoted = kind == "key_account_promoted"
    title = (f"{key_account.name} is now a key account ({key_account.tier})" if promoted
             else f"{key_account.name} is no longer a key account")
    detail = (f"{key_account.name} ({key_account.account_id}, {key_account.country}) changed tier from "
              f"{old_tier} to {key_account.tier}. "
              + ("Sales hands it over to a key account manager: see the handover alert." if promoted
                 else "Its agreements are no longer judged as a key account's; open conflicts are resolved."))
    return NoticeDraft(kind=kind, key_account_id=key_account.account_id, account_id=key_account.account_id,
                       about=key_account.account_id, recipients=people, title=title, detail=detail)


def handover_finding(key_account: Account, members: Iterable[Account], team: Team, agreements: Iterable[Agreement],
                     open_alerts: Iterable[dict], fallback: str, today) -> Finding:
    """`key_account_handover`: everything a KAM taking the account over must know, in one alert.

    The hierarchy, the team so far, the active agreements and the open exceptions: the "all
    relevant information" of a structured handover from sales.
    """
    assignee = global_assignee(team, fallback)
    members = sorted(members, key=lambda a: (a.account_id != key_account.account_id, a.account_id))
    active = sorted((a for a in agreements if a.is_active(today)), key=lambda a: a.agreement_id)
    alerts = sorted(open_alerts, key=lambda a: a["alert_id"])
    people = sorted(team.members, key=lambda m: (m.person_id, m.role))
    lines = [f"{key_account.name} ({key_account.account_id}) was promoted to {key_account.tier}: "
             f"assign a key account manager and take it over from sales."]
    lines.append("Hierarchy: " + _listed([f"{a.name} ({a.account_id}, {a.country})" for a in members]) + ".")
    lines.append("Team so far: " + (_listed([f"{_name(m)} ({m.role}{', ' + m.country if m.country else ''})"
                                             for m in people]) or "nobody") + ".")
    lines.append("Active agreements: " + (_listed([f"{_describe(a)}, agreed by {a.agreed_by}" for a in active])
                                          or "none") + ".")
    lines.append("Open exceptions: " + (_listed([f"{a['title']}" for a in alerts]) or "none") + ".")
    return Finding(
        rule=HANDOVER_RULE, key_account_id=key_account.account_id, account_id=key_account.account_id,
        evidence=(key_account.account_id,), severity="high", assignee=assignee, recipients=(assignee,),
        title=f"Hand over {key_account.name} to a key account manager",
        detail=" ".join(lines),
        data={"tier": key_account.tier,
              "hierarchy": [{"account_id": a.account_id, "name": a.name, "country": a.country,
                             "parent_id": a.parent_id} for a in members[:LISTED]],
              "team": [{"person_id": m.person_id, "name": m.name, "role": m.role, "country": m.country}
                       for m in people[:LISTED]],
              "agreements": [a.agreement_id for a in active[:LISTED]],
              "open_alerts": [a["alert_id"] for a in alerts[:LISTED]],
              "left_out": {"hierarchy": max(0, len(members) - LISTED), "team": max(0, len(people) - LISTED),
                           "agreements": max(0, len(active) - LISTED), "open_alerts": max(0, len(alerts) - LISTED)}},
    )


def _listed(items: list[str]) -> str:
    shown = "; ".join(items[:LISTED])
    return shown + (f"; and {len(items) - LISTED} more" if len(items) > LISTED else "")


def _name(member) -> str:
    if member.name and member.name != member.person_id:
        return f"{member.name} [{member.person_id}]"
    return member.person_id


def _person(team: Team, person_id: str | None) -> str:
    for member in team.roles_of(person_id):
        if member.name and member.name != person_id:
            return f"{member.name} [{person_id}]"
    return person_id or "someone"


def _roles(team: Team, person_id: str | None) -> str:
    roles = sorted({m.role for m in team.roles_of(person_id)})
    return f" ({', '.join(roles)})" if roles else " (not on the team)"


def _what(a: Agreement) -> str:
    if a.kind == "price":
        return f"a {a.scope} price for {a.product_id}"
    if a.kind == "contract":
        return f"a {a.scope} {a.contract_type} contract"
    return f"a {a.charge} service {a.service_id}"


def _describe(a: Agreement) -> str:
    where = f" in {a.country}" if a.scope == "local" and a.country else ""
    return f"{describe(a)}{where}, valid {a.valid_from}–{a.valid_to or 'open'}"

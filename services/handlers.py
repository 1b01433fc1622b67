"""One handler per event type (CONTRACT §3, §4, §5): apply the event to the state, say what changed.

`HANDLERS` maps each type to its handler; `ORDERING_KEYS` maps it to what the event reads or
changes that other events may too, known *before* it is applied: the processor applies events that
share nothing in waves and judges a key account's changes before the next event that touches the
same conflicts, so outputs never depend on where a batch happened to end.

Agreement conflicts are judged later, per key account (services/judging.py); exceptions
(dunning, scarce stock, handover) and notices are decided here, when their event arrives.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from pydantic_core import from_json  # our own JSON columns: the faster parser reads them exactly

from schemas.decode import Event
from services.batch import Batch
from services.config import Settings
from services.domain import CLOSED_STATUSES, iso
from services.inputs import InputRecord
from services.rules.agreements import conflict_families
from services.rules.alerts import DUNNING_ONLY, STATUS_AFTER, refuse_decision
from services.rules.exceptions import STOCK_RULE, allocate, is_shortage, judge_dunning, stock_findings
from services.rules.notices import HANDOVER_RULE, commitment_notice, handover_finding, tier_change_notice
from services.store import tables as t
from services.store.queries import key_account_picture
from services.store.state import StateRepository, dumps

AGREEMENT_KINDS = {"price.agreed": "price", "contract.negotiated": "contract", "service.agreed": "service"}
#: the columns of an agreement row that come straight from the event's data (CONTRACT §3)
AGREEMENT_FIELDS = ("agreement_id", "version", "account_id", "agreed_by", "scope", "country", "product_id", "currency",
                    "contract_type", "status", "service_id", "charge")

Handler = Callable[[Batch, Settings, InputRecord, Event], None]


def ref(event: Event) -> str:
    """`caused_by` of everything the event causes."""
    return f"{event.source}/{event.id}"


def _stamp(event: Event) -> tuple[str, str]:
    """Last-writer-wins order of master data: event time, then event id."""
    return iso(event.time), event.id


def _newer_than_stored(batch: Batch, event: Event, table, *key) -> tuple[tuple[str, str], dict | None] | None:
    """Master data is last-writer-wins: (stamp, stored row) if the event is newer, else None (counted stale)."""
    stamp = _stamp(event)
    stored = batch.repo.get(table, *key)
    if stored is not None and (stored["event_time"], stored["event_id"]) >= stamp:
        batch.result.stale += 1
        return None
    return stamp, stored


def _newer_version(batch: Batch, agreement_id: str, version: int) -> tuple[bool, dict | None]:
    """Agreements keep their highest version: (accepted, stored row); a lower or equal one is counted stale."""
    previous = batch.repo.get(t.agreements, agreement_id)
    if previous is not None and previous["version"] >= version:
        batch.result.stale += 1
        return False, previous
    return True, previous


def _day(value) -> str | None:
    return value.isoformat() if value is not None else None


# -- master data ---------------------------------------------------------------------------------

def on_account_upserted(batch: Batch, settings: Settings, record: InputRecord, event: Event) -> None:
    repo, data = batch.repo, event.data
    if (accepted := _newer_than_stored(batch, event, t.accounts, data.account_id)) is None:
        return
    stamp, current = accepted
    if data.parent_id is not None and repo.ancestors_reach(data.parent_id, data.account_id):
        batch.dead_letter(record, "invalid_data",
                          f"parent_id {data.parent_id!r} would make {data.account_id!r} its own ancestor")
        return
    repo.put(t.accounts, dict(account_id=data.account_id, name=data.name, parent_id=data.parent_id,
                              country=data.country, tier=data.tier,
                              root_id=current["root_id"] if current else data.account_id,
                              event_time=stamp[0], event_id=stamp[1]))
    unchanged_parent = current is not None and current["parent_id"] == data.parent_id
    old_roots = {} if unchanged_parent else repo.reroot(data.account_id)
    for root in {current["root_id"] if current else None, *old_roots.values(), repo.root_of(data.account_id)}:
        batch.touch(root, ref(event))
    if current is not None and repo.root_of(data.account_id) == data.account_id:
        _tier_changed(batch, settings, event, old_tier=current["tier"])


def _tier_changed(batch: Batch, settings: Settings, event: Event, old_tier: str) -> None:
    """A root account promoted to a key account (or demoted): the team hears it, and a handover opens (or ends)."""
    repo, account_id = batch.repo, event.data.account_id
    promoted, demoted = old_tier == "none" and event.data.tier != "none", old_tier != "none" and event.data.tier == "none"
    if not (promoted or demoted):
        return
    key_account = repo.account(account_id)
    team = repo.teams([account_id])[account_id]
    kind = "key_account_promoted" if promoted else "key_account_demoted"
    _send_notice(batch, tier_change_notice(kind, key_account, team, settings.fallback_assignee, old_tier), event)
    if demoted:
        for alert in repo.open_alerts_for(HANDOVER_RULE, account_id):
            batch.change_status(alert, "resolved", ref(event))
        return
    accounts, agreements, alerts = key_account_picture(repo, account_id)
    finding = handover_finding(key_account, accounts, team, agreements, alerts, settings.fallback_assignee,
                               batch.now.date())
    batch.open_alert(finding, ref(event), ref_id=account_id)


def on_team_member_assigned(batch: Batch, settings: Settings, record: InputRecord, event: Event,
                            present: bool = True) -> None:
    repo, data = batch.repo, event.data
    if (accepted := _newer_than_stored(batch, event, t.team_members, data.account_id, data.person_id, data.role)) is None:
        return
    stamp, _ = accepted
    if repo.account(data.account_id) is None:
        batch.result.unknown_accounts += 1
    repo.put(t.team_members, dict(account_id=data.account_id, person_id=data.person_id, role=data.role,
                                  country=data.country, name=data.name, email=data.email, present=present,
                                  event_time=stamp[0], event_id=stamp[1]))
    batch.touch(repo.root_of(data.account_id), ref(event), accounts_changed=False)


def on_team_member_removed(batch: Batch, settings: Settings, record: InputRecord, event: Event) -> None:
    on_team_member_assigned(batch, settings, record, event, present=False)


# -- agreements and promotions -------------------------------------------------------------------

def on_agreement(batch: Batch, settings: Settings, record: InputRecord, event: Event) -> None:
    """A price, contract or service: a newer version replaces the stored one; the maker's KAM is told."""
    repo, data = batch.repo, event.data
    accepted, previous = _newer_version(batch, data.agreement_id, data.version)
    if not accepted:
        return
    fields = data.__dict__  # the model's fields; those another agreement type lacks are None
    values = {name: fields.get(name) for name in AGREEMENT_FIELDS}
    values.update(kind=AGREEMENT_KINDS[event.type], valid_from=_day(data.valid_from),
                  valid_to=_day(fields.get("valid_to")),
                  price=None if fields.get("price") is None else str(data.price))
    repo.put(t.agreements, values)
    account = repo.account(data.account_id)
    if account is None:
        batch.result.unknown_accounts += 1
    root = account.root_id if account is not None else data.account_id
    batch.touch_agreement(root, ref(event), data.agreement_id)
    if previous is not None and previous["account_id"] != data.account_id:
        batch.touch_agreement(repo.root_of(previous["account_id"]), ref(event), data.agreement_id)
    key_account = repo.account(root) if account is not None else None
    if key_account is not None and key_account.tier != "none":
        team = repo.teams([root])[root]
        notice = commitment_notice(repo.as_agreement(values), account, key_account, team, settings.fallback_assignee)
        _send_notice(batch, notice, event)


def on_agreement_withdrawn(batch: Batch, settings: Settings, record: InputRecord, event: Event) -> None:
    repo, data = batch.repo, event.data
    accepted, previous = _newer_version(batch, data.agreement_id, data.version)
    if not accepted:
        return
    values = dict(previous) if previous is not None else {
        name: None for name in (*AGREEMENT_FIELDS, "valid_from", "valid_to", "price")}
    values.update(agreement_id=data.agreement_id, version=data.version, kind="withdrawal")
    repo.put(t.agreements, values)
    if previous is not None:
        batch.touch_agreement(repo.root_of(previous["account_id"]), ref(event), data.agreement_id)


def on_promotion_launched(batch: Batch, settings: Settings, record: InputRecord, event: Event) -> None:
    repo, data = batch.repo, event.data
    if (accepted := _newer_than_stored(batch, event, t.promotions, data.promotion_id)) is None:
        return
    stamp, old = accepted
    repo.put(t.promotions, dict(
        promotion_id=data.promotion_id, country=data.country, product_id=data.product_id, price=str(data.price),
        currency=data.currency, valid_from=_day(data.valid_from), valid_to=_day(data.valid_to),
        audience=data.audience, launched_by=data.launched_by, event_time=stamp[0], event_id=stamp[1]))
    for root in _undercut_roots(repo, event, old):
        batch.touch_agreement(root, ref(event), data.promotion_id)


def _promotion_families(terms: dict, old: dict | None) -> set[str]:
    return conflict_families(terms) | (conflict_families(old) if old is not None else set())


def _undercut_roots(repo: StateRepository, event: Event, old: dict | None) -> set[str]:
    """The key accounts a promotion (as launched now, and as it was) may undercut."""
    data = event.data
    pairs = {(data.country, data.product_id), *([(old["country"], old["product_id"])] if old else [])}
    return {root for country, product in pairs for root in repo.key_accounts_undercut_in(country, product)}


# -- exceptions ----------------------------------------------------------------------------------

def on_dunning_triggered(batch: Batch, settings: Settings, record: InputRecord, event: Event) -> None:
    repo, data = batch.repo, event.data
    account = repo.account(data.account_id)
    if account is None:
        batch.result.unknown_accounts += 1
    key_account = repo.key_account_of(data.account_id)
    team = repo.teams([key_account.account_id])[key_account.account_id] if key_account else None
    outcome = judge_dunning(data, account, key_account, team, settings.fallback_assignee)
    alert_id = None
    if outcome.finding is not None:
        alert_id = batch.open_alert(outcome.finding, ref(event), ref_id=data.dunning_id,
                                    awaiting_decision=outcome.action == "hold")
    batch.instruct(kind="dunning", ref_id=data.dunning_id, action=outcome.action, account_id=data.account_id,
                   key_account_id=key_account and key_account.account_id, reason=outcome.reason, alert_id=alert_id,
                   caused_by=ref(event), allocation=[])


def on_stock_shortage(batch: Batch, settings: Settings, record: InputRecord, event: Event) -> None:
    """Allocate a shortage; a newer report of the item resolves the older one's alerts, relieved or not."""
    repo, data = batch.repo, event.data
    shortage = is_shortage(data)
    key_account_of_order, allocation = {}, []
    if shortage:
        for order in data.orders:
            key_account = repo.key_account_of(order.account_id)
            if key_account is not None:
                key_account_of_order[order.order_id] = key_account
        tiers = {order_id: ka.tier for order_id, ka in key_account_of_order.items()}
        allocation = allocate(data.orders, data.available_qty, tiers)
        batch.instruct(kind="allocation", ref_id=data.item_id, action="allocate", account_id=None,
                       key_account_id=None, allocation=[{"order_id": o, "qty": q} for o, q in allocation],
                       reason=f"{data.available_qty} available for {sum(o.qty for o in data.orders)} ordered; "
                              f"ranked by key-account tier, then order time", caused_by=ref(event))
    if (accepted := _newer_than_stored(batch, event, t.shortages, data.item_id)) is None:
        return
    stamp, _ = accepted
    repo.put(t.shortages, dict(item_id=data.item_id, event_time=stamp[0], event_id=stamp[1]))
    for old in repo.open_alerts_for(STOCK_RULE, data.item_id):
        batch.change_status(old, "resolved", ref(event))
    if not shortage:
        return
    teams = repo.teams({ka.account_id for ka in key_account_of_order.values()})
    for finding in stock_findings(data, allocation, key_account_of_order, teams, settings.fallback_assignee):
        batch.open_alert(finding, ref(event), ref_id=data.item_id)


# -- decisions -----------------------------------------------------------------------------------

def on_decision_made(batch: Batch, settings: Settings, record: InputRecord, event: Event) -> None:
    """Apply a KAM's decision if the shared policy (services/rules/alerts.py) allows it; else a dead letter."""
    repo, data = batch.repo, event.data
    alert = repo.alert(data.alert_id)
    if alert is None:
        return _refuse(batch, record, event, "unknown_alert", f"no alert {data.alert_id!r}")
    team = repo.teams([alert["key_account_id"]])[alert["key_account_id"]]
    refusal = refuse_decision(data.decision, data.decided_by, rule=alert["rule"], status=alert["status"],
                              key_account_id=alert["key_account_id"], team=team)
    if refusal is not None:
        return _refuse(batch, record, event, refusal.code, refusal.message)
    status = STATUS_AFTER[data.decision]
    extra = {"closed_by_decision": status in CLOSED_STATUSES}
    decided = {"decision": data.decision, "decided_by": data.decided_by, "comment": data.comment}
    if data.decision in DUNNING_ONLY:
        extra["awaiting_decision"] = False
        decided["instruction"] = data.decision
    extra["data"] = dumps(dict(from_json(alert["data"]), **decided))
    batch.change_status(alert, status, ref(event), decided_by=data.decided_by, comment=data.comment, **extra)
    batch.record_outcome(event.source, event.id, data, "applied")
    if data.decision in DUNNING_ONLY:
        batch.instruct(kind="dunning", ref_id=alert["ref_id"], action=data.decision, account_id=alert["account_id"],
                       key_account_id=alert["key_account_id"],
                       reason=f"decided by {data.decided_by}" + (f": {data.comment}" if data.comment else ""),
                       alert_id=alert["alert_id"], decided_by=data.decided_by, caused_by=ref(event), allocation=[])


def _refuse(batch: Batch, record: InputRecord, event: Event, code: str, message: str) -> None:
    batch.dead_letter(record, code, message)
    batch.record_outcome(event.source, event.id, event.data, "rejected", code, message)


def _send_notice(batch: Batch, notice, event: Event) -> None:
    if notice is not None:
        batch.notify(kind=notice.kind, key_account_id=notice.key_account_id, account_id=notice.account_id,
                     about=notice.about, recipients=list(notice.recipients), title=notice.title,
                     detail=notice.detail, caused_by=ref(event))


HANDLERS: dict[str, Handler] = {
    "account.upserted": on_account_upserted,
    "team.member_assigned": on_team_member_assigned,
    "team.member_removed": on_team_member_removed,
    "price.agreed": on_agreement,
    "contract.negotiated": on_agreement,
    "service.agreed": on_agreement,
    "agreement.withdrawn": on_agreement_withdrawn,
    "promotion.launched": on_promotion_launched,
    "dunning.triggered": on_dunning_triggered,
    "stock.shortage": on_stock_shortage,
    "decision.made": on_decision_made,
}


def _decision_roots(repo: StateRepository, event: Event) -> set[str] | None:
    alert = repo.alert(event.data.alert_id)
    return {alert["key_account_id"]} if alert is not None else None  # judging may be about to open it


# -- what an event must stay ordered with, known before the batch is applied ------------------

OrderingKey = tuple[str, str]  # (name, use): see ORDERING_KEYS


class RootsAhead:
    """The roots accounts will have once the batch's earlier account upserts are applied.

    Ordering is planned before anything is applied, so an account created or moved earlier in the
    batch must be followed here; a move that carries a subtree along (children known to the store
    to the store is beyond it, and everything after it keeps its place (`lost`).
    """

    def __init__(self, repo: StateRepository):
        self.repo = repo
        self.roots: dict[str, str] = {}
        self.children: dict[str, set[str]] = defaultdict(set)  # parent -> accounts the batch put under it
        self.agreements: dict[str, dict] = {}  # agreement id -> its newest version's fields seen in the batch
        self.promotions: dict[str, dict] = {}  # promotion id -> its terms as last launched in the batch
        self.priced: dict[str, set[str]] = defaultdict(set)  # product -> key accounts given a global price in it
        self.in_country: dict[str, set[str]] = defaultdict(set)  # country -> key accounts given an account there
        self.lost = False

    def root_of(self, account_id: str | None) -> str | None:
        if account_id in self.roots:
            return self.roots[account_id]
        row = self.repo.get(t.accounts, account_id) if account_id is not None else None
        return row["root_id"] if row is not None else account_id

    def upsert(self, account_id: str, parent_id: str | None) -> set[str]:
        """Follow an account upsert; returns the roots it touches (old and new, and its subtree's old ones)."""
        old = self.root_of(account_id)
        known_parent = parent_id is not None and (parent_id in self.roots or self.repo.account(parent_id) is not None)
        new = self.root_of(parent_id) if known_parent else account_id
        touched = {old, new}
        if old != new:
            if self.repo.may_have_children(account_id):
                self.lost = True  # a stored subtree moves: its roots are not known here
            for child in self._descendants(account_id):
                touched.add(self.root_of(child))
                self.roots[child] = new
        self.roots[account_id] = new
        if parent_id is not None:
            self.children[parent_id].add(account_id)
        return touched

    def _descendants(self, account_id: str) -> list[str]:
        found, frontier = [], [account_id]
        while frontier:
            frontier = [c for parent in frontier for c in self.children.get(parent, ()) if c not in found]
            found += frontier
        return found

    def undercut(self, country: str, product_id: str) -> set[str]:
        """Key accounts a promotion may undercut: the store's, and any the batch may have made so."""
        return self.repo.key_accounts_undercut_in(country, product_id) | self.priced[product_id] | self.in_country[country]


def _ka(*roots: str | None, families: set[str] | None = None, read: bool = False) -> set[OrderingKey]:
    """Ordering keys of key accounts: whole ("ka:R", "x"), some conflict families ("ka:R", "/f") or master
    data read ("ka:R", "r")."""
    roots = [root for root in roots if root is not None]
    if read:
        return {("ka:" + root, "r") for root in roots}
    if families is None:
        return {("ka:" + root, "x") for root in roots}
    return {("ka:" + root, "/" + family) for root in roots for family in families}


def _ordering_of_account(repo: StateRepository, ahead: RootsAhead, event: Event) -> set[OrderingKey]:
    data = event.data
    current = repo.get(t.accounts, data.account_id)
    roots = ahead.upsert(data.account_id, data.parent_id)
    ahead.in_country[data.country].add(ahead.root_of(data.account_id))
    keys = _ka(*roots) | {("country:" + data.country, "w")}
    if current is not None:
        keys.add(("country:" + current["country"], "w"))  # the key accounts a promotion there may undercut change
    return keys


def _ordering_of_team(repo: StateRepository, ahead: RootsAhead, event: Event) -> set[OrderingKey]:
    return _ka(ahead.root_of(event.data.account_id))


def _ordering_of_agreement(repo: StateRepository, ahead: RootsAhead, event: Event) -> set[OrderingKey]:
    data = event.data
    fields = data.__dict__  # a missing attribute of a pydantic model costs an exception: read the fields
    account_id = fields.get("account_id")
    previous = ahead.agreements.get(data.agreement_id) or repo.get(t.agreements, data.agreement_id)
    terms = fields if account_id is not None else dict(previous or {}, **fields)
    families = conflict_families(terms) | (conflict_families(previous) if previous is not None else set())
    roots = {ahead.root_of(account_id)}
    if previous is not None:
        roots.add(ahead.root_of(previous["account_id"]))
    keys = _ka(*roots, families=families)
    keys.add(("agreement:" + data.agreement_id, "x"))
    for row in (fields, previous or {}):  # a global price, new or replaced: promotions of its product see it
        if row.get("scope") == "global" and row.get("product_id"):
            keys.add(("product:" + row["product_id"], "w"))
    if account_id is not None:  # a withdrawal keeps the terms of the version it ends
        ahead.agreements[data.agreement_id] = {name: fields.get(name) for name in (
            "agreement_id", "account_id", "scope", "product_id", "service_id", "contract_type")}
        if fields.get("scope") == "global" and fields.get("product_id"):
            ahead.priced[fields["product_id"]].add(ahead.root_of(account_id))
    return keys


def _ordering_of_promotion(repo: StateRepository, ahead: RootsAhead, event: Event) -> set[OrderingKey]:
    data = event.data
    old = ahead.promotions.get(data.promotion_id) or repo.get(t.promotions, data.promotion_id)
    ahead.promotions[data.promotion_id] = {"promotion_id": data.promotion_id, "country": data.country,
                                           "product_id": data.product_id}
    keys = {("promotion:" + data.promotion_id, "x"), ("product:" + data.product_id, "r"),
            ("country:" + data.country, "r")}
    roots = ahead.undercut(data.country, data.product_id)
    if old is not None:
        keys.update((("product:" + old["product_id"], "r"), ("country:" + old["country"], "r")))
        roots |= ahead.undercut(old["country"], old["product_id"])
    return keys | _ka(*roots, families=_promotion_families(data.__dict__, old))


def _ordering_of_dunning(repo: StateRepository, ahead: RootsAhead, event: Event) -> set[OrderingKey]:
    return {("dunning:" + event.data.dunning_id, "x")} | _ka(ahead.root_of(event.data.account_id), read=True)


def _ordering_of_shortage(repo: StateRepository, ahead: RootsAhead, event: Event) -> set[OrderingKey]:
    return {("item:" + event.data.item_id, "x")} | _ka(*(ahead.root_of(o.account_id) for o in event.data.orders),
                                                       read=True)


def _ordering_of_decision(repo: StateRepository, ahead: RootsAhead, event: Event) -> set[OrderingKey] | None:
    roots = _decision_roots(repo, event)
    return None if roots is None else _ka(*roots)


#: What each event reads or writes that another event of the batch may too (key accounts, agreements,
#: products, countries, items, references). Events that share none commute, so the processor may
#: apply them in waves — each wave's key accounts judged once — and still produce what the events
#: would one at a time in their order. A key is a (name, use) pair. Use "x" conflicts with every use
#: of the name; "w" (a global price of a product, an account in a country) only with "r" (a promotion
#: reading which key accounts that makes) and the other way round: global prices of one product for
#: different key accounts commute. A key account's conflict family "/f" conflicts with "x" and the
#: same family; its master-data read "r" with "x" only. None: stay in place (after all before, before
#: all after).
ORDERING_KEYS: dict[str, Callable[[StateRepository, RootsAhead, Event], set[OrderingKey] | None]] = {
    "account.upserted": _ordering_of_account,
    "team.member_assigned": _ordering_of_team,
    "team.member_removed": _ordering_of_team,
    "price.agreed": _ordering_of_agreement,
    "contract.negotiated": _ordering_of_agreement,
    "service.agreed": _ordering_of_agreement,
    "agreement.withdrawn": _ordering_of_agreement,
    "promotion.launched": _ordering_of_promotion,
    "dunning.triggered": _ordering_of_dunning,
    "stock.shortage": _ordering_of_shortage,
    "decision.made": _ordering_of_decision,
}

assert set(HANDLERS) == set(ORDERING_KEYS)

"""Key-account exceptions (CONTRACT §5): dunning and scarce stock.

Unlike the agreement conflicts, these are judged once, when their event arrives: a
dunning run or a shortage is a moment, not a standing state.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.domain import TIER_RANK, Account, Finding, Team
from services.routing import finance_recipients, global_assignee, local_assignee

HOLD_ACTIONS = frozenset({"delivery_block", "collection"})
DUNNING_RULE = "key_account_dunning"
STOCK_RULE = "scarce_stock_allocation"


@dataclass(frozen=True)
class DunningOutcome:
    action: str  # proceed | hold
    reason: str
    finding: Finding | None


def judge_dunning(dunning, account: Account | None, key_account: Account | None, team: Team,
                  fallback: str) -> DunningOutcome:
    """Hold a key account's delivery block or collection for its KAM; let everything else proceed."""
    if key_account is None:
        return DunningOutcome("proceed", "not a key account", None)
    country = account.country if account else None
    assignee = local_assignee(team, country, fallback)
    hold = dunning.proposed_action in HOLD_ACTIONS
    finding = Finding(
        rule=DUNNING_RULE, key_account_id=key_account.account_id, account_id=dunning.account_id,
        evidence=(dunning.dunning_id,), severity="high" if hold else "low", assignee=assignee,
        recipients=finance_recipients(team, assignee),
        title=(f"{'Held' if hold else 'Notice of'} {dunning.proposed_action.replace('_', ' ')} for "
               f"{key_account.name} ({dunning.account_id})"),
        detail=(f"Dunning {dunning.dunning_id} level {dunning.level} on invoice {dunning.invoice_id}: "
                f"{dunning.amount} {dunning.currency} due {dunning.due_date}, proposed {dunning.proposed_action}. "
                + ("Finance holds it until you release it or let it proceed." if hold else "For your information.")),
        data={"dunning_id": dunning.dunning_id, "invoice_id": dunning.invoice_id, "level": dunning.level,
              "amount": str(dunning.amount), "currency": dunning.currency, "due_date": str(dunning.due_date),
              "proposed_action": dunning.proposed_action, "instruction": "hold" if hold else "proceed"},
    )
    if hold:
        return DunningOutcome("hold", f"key account {key_account.account_id}: {dunning.proposed_action} "
                                      f"held for the account manager's decision", finding)
    return DunningOutcome("proceed", f"key account {key_account.account_id}: reminder only", finding)


def allocate(orders, available_qty: int, tier_of_order: dict[str, str]) -> list[tuple[str, int]]:
    """Rank orders by key-account tier, then order time, then id; each gets what is left, up to its qty."""
    ranked = sorted(orders, key=lambda o: (TIER_RANK[tier_of_order.get(o.order_id, "none")], o.ordered_at, o.order_id))
    left = available_qty
    allocation = []
    for order in ranked:
        granted = min(order.qty, left)
        left -= granted
        allocation.append((order.order_id, granted))
    return allocation


def is_shortage(shortage) -> bool:
    return sum(o.qty for o in shortage.orders) > shortage.available_qty


def stock_findings(shortage, allocation: list[tuple[str, int]], key_account_of_order: dict[str, Account],
                   teams: dict[str, Team], fallback: str) -> list[Finding]:
    """One finding per key account with an order in the shortage; high if any of its orders comes up short."""
    granted = dict(allocation)
    orders_by_key_account: dict[str, list] = {}
    for order in shortage.orders:
        key_account = key_account_of_order.get(order.order_id)
        if key_account is not None:
            orders_by_key_account.setdefault(key_account.account_id, []).append(order)
    findings = []
    for key_account_id, orders in sorted(orders_by_key_account.items()):
        key_account = key_account_of_order[orders[0].order_id]
        team = teams.get(key_account_id, Team())
        assignee = global_assignee(team, fallback)
        short = [o for o in orders if granted[o.order_id] < o.qty]
        lines = "; ".join(f"{o.order_id} ({o.account_id}) gets {granted[o.order_id]} of {o.qty}" for o in orders)
        findings.append(Finding(
            rule=STOCK_RULE, key_account_id=key_account_id, account_id=orders[0].account_id,
            evidence=(shortage.item_id,), severity="high" if short else "low", assignee=assignee,
            recipients=(assignee,),
            title=f"Scarce {shortage.item_id}: {key_account.name} {'comes up short' if short else 'is served'}",
            detail=(f"{shortage.available_qty} available against {sum(o.qty for o in shortage.orders)} ordered. "
                    f"{lines}."),
            data={"item_id": shortage.item_id, "available_qty": shortage.available_qty,
                  "orders": [{"order_id": o.order_id, "account_id": o.account_id, "qty": o.qty,
                              "allocated": granted[o.order_id]} for o in orders]},
        ))
    return findings

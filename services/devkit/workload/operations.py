"""The events from outside the agreements: marketing's promotions, finance's dunnings, the warehouse's
stock shortages, and decisions from the inbox.

A conflicting promotion undercuts a key account's global price; a harmless one is aimed at a
segment or priced above every global price (``PROMO_SAFE_MIN`` > ``GLOBAL_MAX``). Dunnings go to key
accounts, standalone and unknown accounts; most shortages are real; the decisions are for alerts
that do not exist, so the service sends them to the DLQ as ``unknown_alert``.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from .accounts import MasterData
from .catalog import COUNTRIES, CURRENCY, PROMO_SAFE_MIN
from .stream import LAST_DAY, EventStream, money


def promotion(stream: EventStream, master: MasterData, conflict: bool = False) -> None:
    rng = stream.rng
    start, end = stream.validity()
    end = end or LAST_DAY.isoformat()
    base = dict(promotion_id=stream.next_id("PR"), valid_from=start, valid_to=end,
                launched_by=stream.next_id("P-MKT"))
    with_globals = [ka for ka in master.key_accounts if ka.globals]
    if conflict and with_globals:
        ka = rng.choice(with_globals)
        product = rng.choice(sorted(ka.globals))
        price = Decimal(ka.globals[product]["price"]) * rng.choice([Decimal("0.90"), Decimal("0.97")])
        data = dict(base, country=rng.choice(ka.countries), product_id=product, price=money(price),
                    currency="EUR", audience="all_customers")
    else:
        country = rng.choice(COUNTRIES)[0]
        if rng.random() < 0.5:
            data = dict(base, country=country, product_id=rng.choice(master.products),
                        price=money(Decimal(rng.randint(100, 40000)) / 100), currency=CURRENCY[country],
                        audience="segment")
        else:
            data = dict(base, country=country, product_id=rng.choice(master.products),
                        price=money(Decimal(rng.randint(PROMO_SAFE_MIN * 100, 90000)) / 100), currency="EUR",
                        audience="all_customers")
    stream.emit("promotion.launched", "marketing/campaigns", data, subject=data["product_id"])


def dunning(stream: EventStream, master: MasterData) -> None:
    rng = stream.rng
    roll = rng.random()
    if roll < 0.6:
        account_id, country = rng.choice(rng.choice(master.key_accounts).accounts)
    elif roll < 0.95:
        account_id, country = rng.choice(master.standalone)
    else:
        account_id, country = stream.next_id("UNKNOWN"), rng.choice(COUNTRIES)[0]
    level = rng.randint(1, 4)
    action = {1: "reminder", 2: rng.choice(["reminder", "delivery_block"]), 3: "delivery_block",
              4: "collection"}[level]
    due = date(2027, 1, 1) + timedelta(days=rng.randint(0, 500))
    data = dict(dunning_id=stream.next_id("DN"), account_id=account_id, invoice_id=stream.next_id("INV"),
                level=level, amount=money(Decimal(rng.randint(5000, 5000000)) / 100), currency=CURRENCY[country],
                due_date=due.isoformat(), proposed_action=action)
    stream.emit("dunning.triggered", "finance/dunning", data, subject=account_id)


def shortage(stream: EventStream, master: MasterData) -> None:
    """Several open orders for one item; in about 80 % of them there is not enough stock for all."""
    rng = stream.rng
    orders = []
    for _ in range(rng.randint(2, 6)):
        if rng.random() < 0.6:
            account_id = rng.choice(rng.choice(master.key_accounts).accounts)[0]
        else:
            account_id = rng.choice(master.standalone)[0]
        ordered = stream.clock - timedelta(minutes=rng.randint(1, 60 * 24 * 20))
        orders.append(dict(order_id=stream.next_id("ORD"), account_id=account_id, qty=rng.randint(1, 50),
                           ordered_at=ordered.strftime("%Y-%m-%dT%H:%M:%SZ")))
    total = sum(o["qty"] for o in orders)
    available = rng.randint(0, total - 1) if rng.random() < 0.8 else total + rng.randint(0, 20)
    data = dict(item_id=rng.choice(master.items), available_qty=available, orders=orders)
    stream.emit("stock.shortage", "wms/central", data, subject=data["item_id"])


def decision(stream: EventStream, master: MasterData) -> None:
    ka = stream.rng.choice(master.key_accounts)
    data = dict(alert_id=stream.next_id("ALERT-GONE"),
                decision=stream.rng.choice(["acknowledge", "resolve", "waive"]),
                decided_by=ka.global_kams[0], comment="handled by phone")
    stream.emit("decision.made", "kam/inbox", data)

"""A deterministic, realistic onevoice workload: master data first, then a business-day mix of events.

    from services.devkit.workload import generate   # tests, tools
    from workload import generate                   # bench scripts (bench/workload.py re-exports it)

    messages = generate(20_000, seed=7, prefix="w-3fa2")   # [(topic, key, value), ...] in publish order
    write_jsonl("events.jsonl", messages)                  # for `onevoice replay events.jsonl`

Same arguments, same bytes (one seeded ``random.Random``, a fixed event clock starting
2027-01-01T00:00:00Z). Every value is a valid CloudEvent of CONTRACT §2/§3; every id
(accounts, persons, agreements, events, ...) starts with ``prefix`` so several runs can share
one broker.

Order of the messages:

1. **Master data** (all on ``crm.accounts``): ``key_accounts`` key accounts with 1–3 levels of
   hierarchy (root, country subsidiaries, plants under some subsidiaries), in shuffled order
   per key account so children sometimes arrive before their parent; their teams (global_kam,
   a local_kam per country, usually a senior_kam, finance, executive_sponsor, sometimes a
   country_manager, sales and technical members, some of whom are removed again; some
   local_kams are assigned on the subsidiary rather than the root); some renamed accounts;
   ``key_accounts // 2`` standalone accounts with tier ``none``.
2. **The mix**, until ``n_events`` messages in all: global and local ``price.agreed``,
   ``contract.negotiated``, ``service.agreed``, newer versions of them, ``agreement.withdrawn``,
   ``promotion.launched``, ``dunning.triggered`` (key accounts, standalone and unknown
   accounts), ``stock.shortage`` (several per item; most are real shortages), a few
   ``decision.made`` for alerts that do not exist (they go to the DLQ as ``unknown_alert``),
   ~1 % exact redeliveries (same bytes, same ``(source, id)``) and ~0.5 % stale versions.

About ``conflict_share`` of the agreement events create a conflict: a local price below
(or above) the key account's global price in the same currency, a second signed global
contract of one type, a free service where the same service is paid under another agreement
(agreed by another person), or an agreement made by someone without the right; about
``conflict_share`` of the promotions undercut a global price. Every other event is built so
that it creates no conflict, whatever the order in which the service sees them: newer
versions of a global price keep the price, non-conflicting local prices are in the
country's own currency, for a product without a global price, or equal to the global price,
and "harmless" promotions are above every global price or aimed at a segment. Conflicting
agreements get no newer versions (only, sometimes, a withdrawal), so the severity of the
final open alerts does not depend on the interleaving either.

Validity periods start in the first half of 2027 and end in 2028 or stay open, so all
agreements are active on any date in 2027 and all of them overlap.

If the master data alone is longer than ``n_events`` it is cut to ``n_events`` messages.
"""

from __future__ import annotations

import bisect
import json
import random
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from schemas.registry import KEY_FIELD_BY_TOPIC, TOPIC_BY_TYPE

__all__ = ["generate", "write_jsonl", "TOPIC_BY_TYPE"]

# The contract's routing (CONTRACT §3), from the one place that defines it.
_KEY_FIELD = KEY_FIELD_BY_TOPIC

# (country, local currency)
_COUNTRIES = [("DE", "EUR"), ("FR", "EUR"), ("IT", "EUR"), ("ES", "EUR"), ("NL", "EUR"), ("AT", "EUR"),
              ("BE", "EUR"), ("PT", "EUR"), ("PL", "PLN"), ("CH", "CHF"), ("GB", "GBP"), ("SE", "SEK"),
              ("CZ", "CZK"), ("DK", "DKK"), ("US", "USD"), ("JP", "JPY")]
_CURRENCY = dict(_COUNTRIES)
_KEY_TIERS = ["key", "key", "international_key", "international_key", "strategic", "corporate_strategic"]
_CONTRACT_TYPES = ["framework", "supply", "service"]
_SERVICES = ["installation", "maintenance", "training", "hotline", "logistics", "recycling", "consulting",
             "calibration", "spare-parts", "extended-warranty", "express-delivery", "onsite-support"]
_GLOBAL_MAX = Decimal("500.00")   # global prices stay below this ...
_PROMO_SAFE_MIN = 600             # ... and harmless all-customer promotions above it
_LAST_DAY = date(2028, 12, 31)
_EPOCH = datetime(2027, 1, 1, tzinfo=timezone.utc)


def _money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


class _KeyAccount:
    def __init__(self, account_id: str, country: str, tier: str):
        self.id = account_id
        self.country = country
        self.tier = tier
        self.accounts: list[tuple[str, str]] = [(account_id, country)]  # (account_id, country), root first
        self.countries: list[str] = [country]
        self.global_kams: list[str] = []
        self.senior_kam: str | None = None
        self.executive_sponsor: str | None = None
        self.local_kam: dict[str, str] = {}
        self.finance: list[str] = []
        self.globals: dict[str, dict] = {}           # product -> live global price data (EUR)
        self.global_products: set[str] = set()       # products that ever had a global price
        self.local_only: set[str] = set()            # products with a local EUR price and no global one
        self.signed_global: dict[str, list[str]] = {t: [] for t in _CONTRACT_TYPES}
        self.services: dict[str, list[str]] = {}     # service_id -> agreement ids

    def global_deciders(self) -> list[str]:
        return [p for p in [*self.global_kams, self.senior_kam, self.executive_sponsor] if p]

    def free_deciders(self) -> list[str]:
        return [p for p in [*self.global_kams, self.senior_kam] if p]


class _Generator:
    def __init__(self, seed: int, key_accounts: int, conflict_share: float, prefix: str):
        self.rng = random.Random(seed)
        self.prefix = prefix
        self.n_key = max(1, key_accounts)
        self.conflict_share = conflict_share
        self.out: list[tuple[str, bytes, bytes]] = []
        self.clock = _EPOCH
        self.seq = 0
        self.counter: dict[str, int] = {}
        self.kas: list[_KeyAccount] = []
        self.standalone: list[tuple[str, str]] = []
        self.agreements: dict[str, dict] = {}        # agreement id -> {"type", "data", "ka", "history", ...}
        # Not withdrawn, in the order recorded (kept up to date rather than filtered per event: the filtering
        # made generating quadratic, 100,000 events took four minutes); what a random choice picks is unchanged.
        self.versionable: list[str] = []
        self.withdrawable: list[str] = []
        self.recorded: list[dict] = []  # every agreement, in the order recorded
        self.revised: list[int] = []  # positions in `recorded` of the agreements with a newer version, ascending
        self.products = [f"{prefix}-SKU{n:04d}" for n in range(max(40, self.n_key * 2))]
        self.items = [f"{prefix}-ITEM{n:04d}" for n in range(max(10, self.n_key))]

    # -- helpers ---------------------------------------------------------------------------

    def next_id(self, kind: str) -> str:
        self.counter[kind] = self.counter.get(kind, 0) + 1
        return f"{self.prefix}-{kind}{self.counter[kind]:06d}"

    def tick(self) -> str:
        self.clock += timedelta(seconds=self.rng.randint(1, 90))
        return self.clock.strftime("%Y-%m-%dT%H:%M:%SZ")

    def emit(self, type_: str, source: str, data: dict, subject: str | None = None) -> None:
        self.seq += 1
        event = {"specversion": "1.0", "id": f"{self.prefix}-e{self.seq:07d}", "source": source, "type": type_,
                 "time": self.tick(), "datacontenttype": "application/json", "data": data}
        if subject is not None:
            event["subject"] = subject
        topic = TOPIC_BY_TYPE[type_]
        key = data[_KEY_FIELD[topic]]
        self.out.append((topic, key.encode(), json.dumps(event, separators=(",", ":")).encode()))

    def validity(self) -> tuple[str, str | None]:
        start = date(2027, 1, 1) + timedelta(days=self.rng.randint(0, 180))
        if self.rng.random() < 0.3:
            return start.isoformat(), None
        end = min(start + timedelta(days=self.rng.randint(365, 700)), _LAST_DAY)
        return start.isoformat(), end.isoformat()

    def person(self) -> str:
        return self.next_id("P")

    # -- master data -----------------------------------------------------------------------

    def master(self) -> None:
        rng = self.rng
        for _ in range(self.n_key):
            home = rng.choice(_COUNTRIES)[0]
            ka = _KeyAccount(self.next_id("KA"), home, rng.choice(_KEY_TIERS))
            upserts = [dict(account_id=ka.id, name=f"{ka.id} Holding", parent_id=None, country=home, tier=ka.tier)]
            levels = rng.choice([1, 2, 2, 2, 3])
            if levels >= 2:
                for country in rng.sample([c for c, _ in _COUNTRIES if c != home], rng.randint(1, 4)):
                    sub = f"{ka.id}-{country}"
                    upserts.append(dict(account_id=sub, name=f"{ka.id} {country}", parent_id=ka.id,
                                        country=country, tier="none"))
                    ka.accounts.append((sub, country))
                    ka.countries.append(country)
                    if levels == 3 and rng.random() < 0.6:
                        plant = f"{sub}-PLANT{rng.randint(1, 9)}"
                        upserts.append(dict(account_id=plant, name=f"{ka.id} {country} plant", parent_id=sub,
                                            country=country, tier="none"))
                        ka.accounts.append((plant, country))
            rng.shuffle(upserts)  # children may arrive before their parents
            for data in upserts:
                self.emit("account.upserted", "crm/main", data, subject=data["account_id"])
            if rng.random() < 0.1:  # a rename later on: last writer wins
                renamed = dict(upserts[0], name=upserts[0]["name"] + " (renamed)")
                self.emit("account.upserted", "crm/main", renamed, subject=renamed["account_id"])
            self.team(ka)
            self.kas.append(ka)
        for _ in range(max(1, self.n_key // 2)):
            country = rng.choice(_COUNTRIES)[0]
            account_id = self.next_id("SA")
            self.emit("account.upserted", "crm/main",
                      dict(account_id=account_id, name=f"{account_id} GmbH", parent_id=None, country=country,
                           tier="none"), subject=account_id)
            self.standalone.append((account_id, country))

    def assign(self, ka: _KeyAccount, role: str, country: str | None = None, on: str | None = None,
               person: str | None = None) -> str:
        person = person or self.person()
        self.emit("team.member_assigned", "crm/main",
                  dict(account_id=on or ka.id, person_id=person, role=role, name=f"Person {person}",
                       email=f"{person.lower()}@example.com", country=country), subject=ka.id)
        return person

    def team(self, ka: _KeyAccount) -> None:
        rng = self.rng
        for _ in range(2 if rng.random() < 0.1 else 1):
            ka.global_kams.append(self.assign(ka, "global_kam", ka.country))
        ka.global_kams.sort()
        for account_id, country in ka.accounts:
            if country in ka.local_kam:
                continue
            on = account_id if account_id != ka.id and rng.random() < 0.3 else ka.id
            ka.local_kam[country] = self.assign(ka, "local_kam", country, on=on)
        if rng.random() < 0.8:
            ka.senior_kam = self.assign(ka, "senior_kam", ka.country)
        if rng.random() < 0.7:
            ka.executive_sponsor = self.assign(ka, "executive_sponsor", ka.country)
        for _ in range(rng.randint(1, 2)):
            ka.finance.append(self.assign(ka, "finance", ka.country))
        if rng.random() < 0.3:
            self.assign(ka, "country_manager", rng.choice(ka.countries))
        if rng.random() < 0.2:
            self.assign(ka, "technical", ka.country)
        if rng.random() < 0.4:
            sales = self.assign(ka, "sales", rng.choice(ka.countries))
            if rng.random() < 0.5:  # moved on: removed again (never used as agreed_by)
                self.emit("team.member_removed", "crm/main",
                          dict(account_id=ka.id, person_id=sales, role="sales", name=None, email=None,
                               country=None), subject=ka.id)

    # -- agreements ------------------------------------------------------------------------

    def record(self, type_: str, data: dict, ka: _KeyAccount | None, *, versionable: bool,
               source: str = "erp/emea", **extra) -> str:
        self.emit(type_, source, data, subject=data["account_id"])
        self.agreements[data["agreement_id"]] = dict(type=type_, data=data, ka=ka, history=[data], source=source,
                                                     withdrawn=False, position=len(self.recorded), **extra)
        self.recorded.append(self.agreements[data["agreement_id"]])
        if versionable:
            self.versionable.append(data["agreement_id"])
        self.withdrawable.append(data["agreement_id"])
        return data["agreement_id"]

    def global_price(self, ka: _KeyAccount, *, conflict_base: bool = False) -> str | None:
        free = [p for p in self.products if p not in ka.global_products and p not in ka.local_only]
        if not free:
            return None
        product = self.rng.choice(free)
        ka.global_products.add(product)
        start, end = self.validity()
        data = dict(agreement_id=self.next_id("AG"), version=1, account_id=ka.id, scope="global", country=None,
                    product_id=product, price=_money(Decimal(self.rng.randint(2000, 45000)) / 100), currency="EUR",
                    valid_from=start, valid_to=end, agreed_by=self.rng.choice(ka.global_deciders()))
        ka.globals[product] = data
        self.record("price.agreed", data, ka, versionable=True, role="global_price")
        return product

    def local_price(self, ka: _KeyAccount | None, conflict: bool = False) -> None:
        rng = self.rng
        start, end = self.validity()
        if ka is None:  # a standalone account: no rules apply
            account_id, country = rng.choice(self.standalone)
            data = dict(agreement_id=self.next_id("AG"), version=1, account_id=account_id, scope="local",
                        country=country, product_id=rng.choice(self.products),
                        price=_money(Decimal(rng.randint(100, 90000)) / 100), currency=_CURRENCY[country],
                        valid_from=start, valid_to=end, agreed_by=self.person())
            self.record("price.agreed", data, None, versionable=True, role="free_local")
            return
        account_id, country = rng.choice(ka.accounts)
        agreed_by = ka.local_kam[country] if rng.random() < 0.8 else rng.choice(ka.global_deciders())
        base = dict(agreement_id=self.next_id("AG"), version=1, account_id=account_id, scope="local",
                    country=country, valid_from=start, valid_to=end, agreed_by=agreed_by)
        if conflict:
            product = rng.choice(sorted(ka.globals)) if ka.globals else self.global_price(ka)
            if product is None:
                return
            global_price = Decimal(ka.globals[product]["price"])
            factor = rng.choice([Decimal("0.90"), Decimal("0.98"), Decimal("0.85"), Decimal("1.10")])
            data = dict(base, product_id=product, price=_money(global_price * factor), currency="EUR")
            self.record("price.agreed", data, ka, versionable=False, role="conflict")
            return
        choice = rng.random()
        if _CURRENCY[country] != "EUR" and choice < 0.6:
            data = dict(base, product_id=rng.choice(self.products),
                        price=_money(Decimal(rng.randint(100, 90000)) / 100), currency=_CURRENCY[country])
            role = "free_local"
        elif ka.globals and choice < 0.8:
            product = rng.choice(sorted(ka.globals))
            data = dict(base, product_id=product, price=ka.globals[product]["price"], currency="EUR")
            role = "equal_local"
        else:
            free = [p for p in self.products if p not in ka.global_products]
            if not free:
                return
            product = rng.choice(free)
            ka.local_only.add(product)
            data = dict(base, product_id=product, price=_money(Decimal(rng.randint(100, 90000)) / 100),
                        currency="EUR")
            role = "free_local"
        self.record("price.agreed", data, ka, versionable=True, role=role)

    def contract(self, ka: _KeyAccount, conflict: bool = False) -> None:
        rng = self.rng
        start, end = self.validity()
        ctype = rng.choice(_CONTRACT_TYPES)
        base = dict(agreement_id=self.next_id("AG"), version=1, account_id=ka.id, scope="global", country=None,
                    contract_type=ctype, status="signed", valid_from=start, valid_to=end,
                    agreed_by=rng.choice(ka.global_deciders()), region=None)
        if conflict:
            if not ka.signed_global[ctype]:
                first = dict(base, agreement_id=self.next_id("AG"))
                ka.signed_global[ctype].append(self.record("contract.negotiated", first, ka, versionable=False,
                                                           role="conflict"))
            ka.signed_global[ctype].append(self.record("contract.negotiated", base, ka, versionable=False,
                                                       role="conflict"))
            return
        if not ka.signed_global[ctype] and rng.random() < 0.6:
            ka.signed_global[ctype].append(self.record("contract.negotiated", base, ka, versionable=True,
                                                       role="contract"))
            return
        if rng.random() < 0.5:  # a draft global contract, never signed later
            data = dict(base, status="draft")
        else:
            account_id, country = rng.choice(ka.accounts)
            data = dict(base, account_id=account_id, scope="local", country=country,
                        agreed_by=ka.local_kam[country], region=rng.choice([None, "EMEA", "APAC", "AMER"]))
        self.record("contract.negotiated", data, ka, versionable=True, role="contract")

    def service(self, ka: _KeyAccount, conflict: bool = False) -> None:
        rng = self.rng
        start, end = self.validity()
        existing_paid = [s for s, ids in ka.services.items()
                         if len(ids) == 1 and self.agreements[ids[0]]["data"]["charge"] == "paid"
                         and not self.agreements[ids[0]]["withdrawn"]]
        if conflict:
            if existing_paid:
                service_id = rng.choice(sorted(existing_paid))
                other = self.agreements[ka.services[service_id][0]]
                other["role"] = "conflict"
                if other["data"]["agreement_id"] in self.versionable:
                    self.versionable.remove(other["data"]["agreement_id"])
                paid_by = other["data"]["agreed_by"]
            else:
                service_id = f"{ka.id}-{rng.choice(_SERVICES)}-{self.next_id('S')[-6:]}"
                paid_by = rng.choice(ka.finance)
                first = dict(agreement_id=self.next_id("AG"), version=1, account_id=ka.id, service_id=service_id,
                             charge="paid", price=_money(Decimal(rng.randint(1000, 200000)) / 100), currency="EUR",
                             valid_from=start, valid_to=end, agreed_by=paid_by)
                ka.services[service_id] = [self.record("service.agreed", first, ka, versionable=False,
                                                       role="conflict")]
            deciders = [p for p in ka.free_deciders() if p != paid_by]
            if not deciders:
                return
            data = dict(agreement_id=self.next_id("AG"), version=1, account_id=ka.id, service_id=service_id,
                        charge="free", price=None, currency=None, valid_from=start, valid_to=end,
                        agreed_by=rng.choice(deciders))
            ka.services[service_id].append(self.record("service.agreed", data, ka, versionable=False,
                                                       role="conflict"))
            return
        service_id = f"{ka.id}-{rng.choice(_SERVICES)}-{self.next_id('S')[-6:]}"
        if rng.random() < 0.7:
            data = dict(agreement_id=self.next_id("AG"), version=1, account_id=rng.choice(ka.accounts)[0],
                        service_id=service_id, charge="paid", price=_money(Decimal(rng.randint(1000, 200000)) / 100),
                        currency="EUR", valid_from=start, valid_to=end,
                        agreed_by=rng.choice([*ka.finance, *ka.local_kam.values(), *ka.global_kams]))
        else:
            data = dict(agreement_id=self.next_id("AG"), version=1, account_id=ka.id, service_id=service_id,
                        charge="free", price=None, currency=None, valid_from=start, valid_to=end,
                        agreed_by=rng.choice(ka.free_deciders()))
        ka.services[service_id] = [self.record("service.agreed", data, ka, versionable=True, role="service")]

    def unauthorized(self, ka: _KeyAccount) -> None:
        rng = self.rng
        start, end = self.validity()
        outsider = self.next_id("P-EXT")
        if rng.random() < 0.5:
            free = [p for p in self.products if p not in ka.global_products and p not in ka.local_only]
            if not free:
                return
            product = rng.choice(free)
            ka.global_products.add(product)  # no global price for it later: it would compare with this one
            data = dict(agreement_id=self.next_id("AG"), version=1, account_id=ka.id, scope="local",
                        country=ka.country, product_id=product, price=_money(Decimal(rng.randint(2000, 45000)) / 100),
                        currency="EUR", valid_from=start, valid_to=end, agreed_by=outsider)
            ka.local_only.add(product)
            self.record("price.agreed", data, ka, versionable=False, role="conflict")
        else:
            # a free service given away by a finance person (only global/senior KAM may concede it)
            data = dict(agreement_id=self.next_id("AG"), version=1, account_id=ka.id,
                        service_id=f"{ka.id}-gift-{self.next_id('S')[-6:]}", charge="free", price=None, currency=None,
                        valid_from=start, valid_to=end, agreed_by=rng.choice([outsider, *ka.finance]))
            ka.services[data["service_id"]] = [self.record("service.agreed", data, ka, versionable=False,
                                                           role="conflict")]

    def new_version(self) -> bool:
        if not self.versionable:
            return False
        agreement = self.agreements[self.rng.choice(self.versionable)]
        data = dict(agreement["data"])
        data["version"] += self.rng.choice([1, 1, 1, 2])
        role = agreement["role"]
        if role == "free_local" or (agreement["type"] == "service.agreed" and data["charge"] == "paid"):
            data["price"] = _money(Decimal(data["price"]) * Decimal(self.rng.choice(["0.95", "1.03", "1.08"])))
        start = date.fromisoformat(data["valid_from"])
        end = min(start + timedelta(days=self.rng.randint(400, 700)), _LAST_DAY)
        data["valid_to"] = end.isoformat() if self.rng.random() < 0.8 else None
        ka = agreement["ka"]
        if role == "global_price":
            ka.globals[data["product_id"]] = data
        self.emit(agreement["type"], agreement["source"], data, subject=data["account_id"])
        agreement["data"] = data
        agreement["history"].append(data)
        if len(agreement["history"]) == 2:
            bisect.insort(self.revised, agreement["position"])
        return True

    def withdraw(self) -> bool:
        if not self.withdrawable:
            return False
        agreement_id = self.rng.choice(self.withdrawable)
        agreement = self.agreements[agreement_id]
        agreement["withdrawn"] = True
        self.withdrawable.remove(agreement_id)
        if agreement_id in self.versionable:
            self.versionable.remove(agreement_id)
        version = agreement["data"]["version"] + 1
        ka = agreement["ka"]
        if agreement["role"] == "global_price":
            ka.globals.pop(agreement["data"]["product_id"], None)
        by = ka.global_kams[0] if ka else agreement["data"]["agreed_by"]
        data = dict(agreement_id=agreement_id, version=version, withdrawn_by=by)
        self.emit("agreement.withdrawn", agreement["source"], data)
        agreement["data"] = dict(agreement["data"], version=version)
        return True

    def stale(self) -> bool:
        if not self.revised:
            return False
        agreement = self.recorded[self.rng.choice(self.revised)]
        old = self.rng.choice(agreement["history"][:-1])
        self.emit(agreement["type"], agreement["source"], old, subject=old["account_id"])
        return True

    # -- exceptions ------------------------------------------------------------------------

    def promotion(self, conflict: bool = False) -> None:
        rng = self.rng
        start, end = self.validity()
        end = end or _LAST_DAY.isoformat()
        base = dict(promotion_id=self.next_id("PR"), valid_from=start, valid_to=end, launched_by=self.next_id("P-MKT"))
        with_globals = [ka for ka in self.kas if ka.globals]
        if conflict and with_globals:
            ka = rng.choice(with_globals)
            product = rng.choice(sorted(ka.globals))
            price = Decimal(ka.globals[product]["price"]) * rng.choice([Decimal("0.90"), Decimal("0.97")])
            data = dict(base, country=rng.choice(ka.countries), product_id=product, price=_money(price),
                        currency="EUR", audience="all_customers")
        else:
            country = rng.choice(_COUNTRIES)[0]
            if rng.random() < 0.5:
                data = dict(base, country=country, product_id=rng.choice(self.products),
                            price=_money(Decimal(rng.randint(100, 40000)) / 100), currency=_CURRENCY[country],
                            audience="segment")
            else:
                data = dict(base, country=country, product_id=rng.choice(self.products),
                            price=_money(Decimal(rng.randint(_PROMO_SAFE_MIN * 100, 90000)) / 100), currency="EUR",
                            audience="all_customers")
        self.emit("promotion.launched", "marketing/campaigns", data, subject=data["product_id"])

    def dunning(self) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.6:
            account_id, country = rng.choice(rng.choice(self.kas).accounts)
        elif roll < 0.95:
            account_id, country = rng.choice(self.standalone)
        else:
            account_id, country = self.next_id("UNKNOWN"), rng.choice(_COUNTRIES)[0]
        level = rng.randint(1, 4)
        action = {1: "reminder", 2: rng.choice(["reminder", "delivery_block"]), 3: "delivery_block",
                  4: "collection"}[level]
        due = date(2027, 1, 1) + timedelta(days=rng.randint(0, 500))
        data = dict(dunning_id=self.next_id("DN"), account_id=account_id, invoice_id=self.next_id("INV"), level=level,
                    amount=_money(Decimal(rng.randint(5000, 5000000)) / 100), currency=_CURRENCY[country],
                    due_date=due.isoformat(), proposed_action=action)
        self.emit("dunning.triggered", "finance/dunning", data, subject=account_id)

    def shortage(self) -> None:
        rng = self.rng
        orders = []
        for _ in range(rng.randint(2, 6)):
            if rng.random() < 0.6:
                account_id = rng.choice(rng.choice(self.kas).accounts)[0]
            else:
                account_id = rng.choice(self.standalone)[0]
            ordered = self.clock - timedelta(minutes=rng.randint(1, 60 * 24 * 20))
            orders.append(dict(order_id=self.next_id("ORD"), account_id=account_id, qty=rng.randint(1, 50),
                               ordered_at=ordered.strftime("%Y-%m-%dT%H:%M:%SZ")))
        total = sum(o["qty"] for o in orders)
        available = rng.randint(0, total - 1) if rng.random() < 0.8 else total + rng.randint(0, 20)
        data = dict(item_id=rng.choice(self.items), available_qty=available, orders=orders)
        self.emit("stock.shortage", "wms/central", data, subject=data["item_id"])

    def decision(self) -> None:
        ka = self.rng.choice(self.kas)
        data = dict(alert_id=self.next_id("ALERT-GONE"), decision=self.rng.choice(["acknowledge", "resolve", "waive"]),
                    decided_by=ka.global_kams[0], comment="handled by phone")
        self.emit("decision.made", "kam/inbox", data)

    def redeliver(self) -> None:
        self.out.append(self.rng.choice(self.out))

    # -- the mix ---------------------------------------------------------------------------

    def agreement(self, kind: str) -> None:
        rng = self.rng
        conflict = rng.random() < self.conflict_share
        ka = rng.choice(self.kas)
        if conflict:
            kind = rng.choice(["local_price", "contract", "service", "unauthorized"])
        if kind == "global_price":
            if self.global_price(ka) is None:
                self.local_price(ka)
        elif kind == "local_price":
            self.local_price(None if not conflict and rng.random() < 0.1 else ka, conflict)
        elif kind == "contract":
            self.contract(ka, conflict)
        elif kind == "service":
            self.service(ka, conflict)
        else:
            self.unauthorized(ka)

    def mix(self, n_events: int) -> None:
        rng = self.rng
        weights = {"global_price": 12, "local_price": 26, "contract": 7, "service": 7, "new_version": 10,
                   "withdraw": 4, "promotion": 5, "dunning": 15, "stock": 10, "redeliver": 1, "stale": 0.5,
                   "decision": 0.2}
        kinds, w = list(weights), list(weights.values())
        forced = ["global_price", "local_price", "contract", "service", "new_version", "withdraw", "promotion",
                  "dunning", "stock", "decision", "stale", "redeliver"]
        while len(self.out) < n_events:
            kind = forced.pop(0) if forced else rng.choices(kinds, w)[0]
            if kind in ("global_price", "local_price", "contract", "service"):
                self.agreement(kind)
            elif kind == "new_version":
                self.new_version() or self.agreement("global_price")
            elif kind == "withdraw":
                self.withdraw() or self.agreement("local_price")
            elif kind == "stale":
                self.stale() or (self.new_version() and self.stale())
            elif kind == "promotion":
                self.promotion(conflict=rng.random() < self.conflict_share)
            elif kind == "dunning":
                self.dunning()
            elif kind == "stock":
                self.shortage()
            elif kind == "decision":
                self.decision()
            else:
                self.redeliver()


def generate(n_events: int, *, seed: int = 1, key_accounts: int = 200, conflict_share: float = 0.05,
             prefix: str = "w") -> list[tuple[str, bytes, bytes]]:
    """`n_events` (topic, key, value) messages in publish order: master data first, then the mix."""
    gen = _Generator(seed, key_accounts, conflict_share, prefix)
    gen.master()
    if len(gen.out) < n_events:
        gen.mix(n_events)
    return gen.out[:n_events]


def write_jsonl(path, messages) -> int:
    """Write the values as JSON lines (one CloudEvent per line) for `onevoice replay`; returns the count."""
    lines = [value.decode("utf-8") for _, _, value in messages]
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)

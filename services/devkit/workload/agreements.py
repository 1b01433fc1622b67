"""Agreements: global and local prices, contracts and services, some of them made by someone without the
right, and what becomes of them later (newer versions, withdrawals, stale versions delivered again).

Each kind is built either to conflict or to stay harmless whatever order the service sees the events
in: newer versions of a global price keep the price; non-conflicting local prices are in the
country's own currency, for a product without a global price, or equal to the global price; and
conflicting agreements get no newer versions (only, sometimes, a withdrawal), so the severity of
the final open alerts does not depend on the interleaving either.
"""

from __future__ import annotations

import bisect
from datetime import date, timedelta
from decimal import Decimal

from .accounts import KeyAccount, MasterData
from .catalog import CONTRACT_TYPES, CURRENCY, SERVICES
from .stream import LAST_DAY, EventStream, money


class Agreements:
    def __init__(self, stream: EventStream, master: MasterData):
        self.stream = stream
        self.master = master
        self.rng = stream.rng
        self.agreements: dict[str, dict] = {}        # agreement id -> {"type", "data", "ka", "history", ...}
        # Not withdrawn, in the order recorded (kept up to date rather than filtered per event: the filtering
        # made generating quadratic, 100,000 events took four minutes); what a random choice picks is unchanged.
        self.versionable: list[str] = []
        self.withdrawable: list[str] = []
        self.recorded: list[dict] = []  # every agreement, in the order recorded
        self.revised: list[int] = []  # positions in `recorded` of the agreements with a newer version, ascending

    def record(self, type_: str, data: dict, ka: KeyAccount | None, *, versionable: bool,
               source: str = "erp/emea", **extra) -> str:
        self.stream.emit(type_, source, data, subject=data["account_id"])
        self.agreements[data["agreement_id"]] = dict(type=type_, data=data, ka=ka, history=[data], source=source,
                                                     withdrawn=False, position=len(self.recorded), **extra)
        self.recorded.append(self.agreements[data["agreement_id"]])
        if versionable:
            self.versionable.append(data["agreement_id"])
        self.withdrawable.append(data["agreement_id"])
        return data["agreement_id"]

    def global_price(self, ka: KeyAccount) -> str | None:
        free = [p for p in self.master.products if p not in ka.global_products and p not in ka.local_only]
        if not free:
            return None
        product = self.rng.choice(free)
        ka.global_products.add(product)
        start, end = self.stream.validity()
        data = dict(agreement_id=self.stream.next_id("AG"), version=1, account_id=ka.id, scope="global", country=None,
                    product_id=product, price=money(Decimal(self.rng.randint(2000, 45000)) / 100), currency="EUR",
                    valid_from=start, valid_to=end, agreed_by=self.rng.choice(ka.global_deciders()))
        ka.globals[product] = data
        self.record("price.agreed", data, ka, versionable=True, role="global_price")
        return product

    def local_price(self, ka: KeyAccount | None, conflict: bool = False) -> None:
        rng = self.rng
        start, end = self.stream.validity()
        if ka is None:  # a standalone account: no rules apply
            account_id, country = rng.choice(self.master.standalone)
            data = dict(agreement_id=self.stream.next_id("AG"), version=1, account_id=account_id, scope="local",
                        country=country, product_id=rng.choice(self.master.products),
                        price=money(Decimal(rng.randint(100, 90000)) / 100), currency=CURRENCY[country],
                        valid_from=start, valid_to=end, agreed_by=self.stream.person())
            self.record("price.agreed", data, None, versionable=True, role="free_local")
            return
        account_id, country = rng.choice(ka.accounts)
        agreed_by = ka.local_kam[country] if rng.random() < 0.8 else rng.choice(ka.global_deciders())
        base = dict(agreement_id=self.stream.next_id("AG"), version=1, account_id=account_id, scope="local",
                    country=country, valid_from=start, valid_to=end, agreed_by=agreed_by)
        if conflict:
            product = rng.choice(sorted(ka.globals)) if ka.globals else self.global_price(ka)
            if product is None:
                return
            global_price = Decimal(ka.globals[product]["price"])
            factor = rng.choice([Decimal("0.90"), Decimal("0.98"), Decimal("0.85"), Decimal("1.10")])
            data = dict(base, product_id=product, price=money(global_price * factor), currency="EUR")
            self.record("price.agreed", data, ka, versionable=False, role="conflict")
            return
        choice = rng.random()
        if CURRENCY[country] != "EUR" and choice < 0.6:
            data = dict(base, product_id=rng.choice(self.master.products),
                        price=money(Decimal(rng.randint(100, 90000)) / 100), currency=CURRENCY[country])
            role = "free_local"
        elif ka.globals and choice < 0.8:
            product = rng.choice(sorted(ka.globals))
            data = dict(base, product_id=product, price=ka.globals[product]["price"], currency="EUR")
            role = "equal_local"
        else:
            free = [p for p in self.master.products if p not in ka.global_products]
            if not free:
                return
            product = rng.choice(free)
            ka.local_only.add(product)
            data = dict(base, product_id=product, price=money(Decimal(rng.randint(100, 90000)) / 100),
                        currency="EUR")
            role = "free_local"
        self.record("price.agreed", data, ka, versionable=True, role=role)

    def contract(self, ka: KeyAccount, conflict: bool = False) -> None:
        rng = self.rng
        start, end = self.stream.validity()
        ctype = rng.choice(CONTRACT_TYPES)
        base = dict(agreement_id=self.stream.next_id("AG"), version=1, account_id=ka.id, scope="global", country=None,
                    contract_type=ctype, status="signed", valid_from=start, valid_to=end,
                    agreed_by=rng.choice(ka.global_deciders()), region=None)
        if conflict:
            if not ka.signed_global[ctype]:
                first = dict(base, agreement_id=self.stream.next_id("AG"))
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

    def service(self, ka: KeyAccount, conflict: bool = False) -> None:
        rng = self.rng
        start, end = self.stream.validity()
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
                service_id = f"{ka.id}-{rng.choice(SERVICES)}-{self.stream.next_id('S')[-6:]}"
                paid_by = rng.choice(ka.finance)
                first = dict(agreement_id=self.stream.next_id("AG"), version=1, account_id=ka.id, service_id=service_id,
                             charge="paid", price=money(Decimal(rng.randint(1000, 200000)) / 100), currency="EUR",
                             valid_from=start, valid_to=end, agreed_by=paid_by)
                ka.services[service_id] = [self.record("service.agreed", first, ka, versionable=False,
                                                       role="conflict")]
            deciders = [p for p in ka.free_deciders() if p != paid_by]
            if not deciders:
                return
            data = dict(agreement_id=self.stream.next_id("AG"), version=1, account_id=ka.id, service_id=service_id,
                        charge="free", price=None, currency=None, valid_from=start, valid_to=end,
                        agreed_by=rng.choice(deciders))
            ka.services[service_id].append(self.record("service.agreed", data, ka, versionable=False,
                                                       role="conflict"))
            return
        service_id = f"{ka.id}-{rng.choice(SERVICES)}-{self.stream.next_id('S')[-6:]}"
        if rng.random() < 0.7:
            data = dict(agreement_id=self.stream.next_id("AG"), version=1, account_id=rng.choice(ka.accounts)[0],
                        service_id=service_id, charge="paid", price=money(Decimal(rng.randint(1000, 200000)) / 100),
                        currency="EUR", valid_from=start, valid_to=end,
                        agreed_by=rng.choice([*ka.finance, *ka.local_kam.values(), *ka.global_kams]))
        else:
            data = dict(agreement_id=self.stream.next_id("AG"), version=1, account_id=ka.id, service_id=service_id,
                        charge="free", price=None, currency=None, valid_from=start, valid_to=end,
                        agreed_by=rng.choice(ka.free_deciders()))
        ka.services[service_id] = [self.record("service.agreed", data, ka, versionable=True, role="service")]

    def unauthorized(self, ka: KeyAccount) -> None:
        rng = self.rng
        start, end = self.stream.validity()
        outsider = self.stream.next_id("P-EXT")
        if rng.random() < 0.5:
            free = [p for p in self.master.products if p not in ka.global_products and p not in ka.local_only]
            if not free:
                return
            product = rng.choice(free)
            ka.global_products.add(product)  # no global price for it later: it would compare with this one
            data = dict(agreement_id=self.stream.next_id("AG"), version=1, account_id=ka.id, scope="local",
                        country=ka.country, product_id=product, price=money(Decimal(rng.randint(2000, 45000)) / 100),
                        currency="EUR", valid_from=start, valid_to=end, agreed_by=outsider)
            ka.local_only.add(product)
            self.record("price.agreed", data, ka, versionable=False, role="conflict")
        else:
            # a free service given away by a finance person (only global/senior KAM may concede it)
            data = dict(agreement_id=self.stream.next_id("AG"), version=1, account_id=ka.id,
                        service_id=f"{ka.id}-gift-{self.stream.next_id('S')[-6:]}", charge="free", price=None,
                        currency=None, valid_from=start, valid_to=end, agreed_by=rng.choice([outsider, *ka.finance]))
            ka.services[data["service_id"]] = [self.record("service.agreed", data, ka, versionable=False,
                                                           role="conflict")]

    # -- later versions, withdrawals and stale copies of recorded agreements --------------

    def new_version(self) -> bool:
        if not self.versionable:
            return False
        agreement = self.agreements[self.rng.choice(self.versionable)]
        data = dict(agreement["data"])
        data["version"] += self.rng.choice([1, 1, 1, 2])
        role = agreement["role"]
        if role == "free_local" or (agreement["type"] == "service.agreed" and data["charge"] == "paid"):
            data["price"] = money(Decimal(data["price"]) * Decimal(self.rng.choice(["0.95", "1.03", "1.08"])))
        start = date.fromisoformat(data["valid_from"])
        end = min(start + timedelta(days=self.rng.randint(400, 700)), LAST_DAY)
        data["valid_to"] = end.isoformat() if self.rng.random() < 0.8 else None
        ka = agreement["ka"]
        if role == "global_price":
            ka.globals[data["product_id"]] = data
        self.stream.emit(agreement["type"], agreement["source"], data, subject=data["account_id"])
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
        self.stream.emit("agreement.withdrawn", agreement["source"], data)
        agreement["data"] = dict(agreement["data"], version=version)
        return True

    def stale(self) -> bool:
        if not self.revised:
            return False
        agreement = self.recorded[self.rng.choice(self.revised)]
        old = self.rng.choice(agreement["history"][:-1])
        self.stream.emit(agreement["type"], agreement["source"], old, subject=old["account_id"])
        return True


"""Master data: key accounts with their hierarchy and team, standalone accounts, products and items.

Everything here is published before the mix, all on ``crm.accounts``; the `KeyAccount` objects then
remember who may agree what and which prices exist, so that the mix can build agreements that do
(or, deliberately, do not) conflict.
"""

from __future__ import annotations

from .catalog import CONTRACT_TYPES, COUNTRIES, KEY_TIERS
from .stream import EventStream


class KeyAccount:
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
        self.signed_global: dict[str, list[str]] = {t: [] for t in CONTRACT_TYPES}
        self.services: dict[str, list[str]] = {}     # service_id -> agreement ids

    def global_deciders(self) -> list[str]:
        return [p for p in [*self.global_kams, self.senior_kam, self.executive_sponsor] if p]

    def free_deciders(self) -> list[str]:
        return [p for p in [*self.global_kams, self.senior_kam] if p]


class MasterData:
    def __init__(self, stream: EventStream, key_accounts: int):
        self.stream = stream
        self.rng = stream.rng
        self.n_key = max(1, key_accounts)
        self.key_accounts: list[KeyAccount] = []
        self.standalone: list[tuple[str, str]] = []  # (account_id, country)
        self.products = [f"{stream.prefix}-SKU{n:04d}" for n in range(max(40, self.n_key * 2))]
        self.items = [f"{stream.prefix}-ITEM{n:04d}" for n in range(max(10, self.n_key))]

    def publish(self) -> None:
        rng, stream = self.rng, self.stream
        for _ in range(self.n_key):
            home = rng.choice(COUNTRIES)[0]
            ka = KeyAccount(stream.next_id("KA"), home, rng.choice(KEY_TIERS))
            upserts = [dict(account_id=ka.id, name=f"{ka.id} Holding", parent_id=None, country=home, tier=ka.tier)]
            levels = rng.choice([1, 2, 2, 2, 3])
            if levels >= 2:
                for country in rng.sample([c for c, _ in COUNTRIES if c != home], rng.randint(1, 4)):
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
                stream.emit("account.upserted", "crm/main", data, subject=data["account_id"])
            if rng.random() < 0.1:  # a rename later on: last writer wins
                renamed = dict(upserts[0], name=upserts[0]["name"] + " (renamed)")
                stream.emit("account.upserted", "crm/main", renamed, subject=renamed["account_id"])
            self._team(ka)
            self.key_accounts.append(ka)
        for _ in range(max(1, self.n_key // 2)):
            country = rng.choice(COUNTRIES)[0]
            account_id = stream.next_id("SA")
            stream.emit("account.upserted", "crm/main",
                        dict(account_id=account_id, name=f"{account_id} GmbH", parent_id=None, country=country,
                             tier="none"), subject=account_id)
            self.standalone.append((account_id, country))

    def _assign(self, ka: KeyAccount, role: str, country: str | None = None, on: str | None = None) -> str:
        person = self.stream.person()
        self.stream.emit("team.member_assigned", "crm/main",
                         dict(account_id=on or ka.id, person_id=person, role=role, name=f"Person {person}",
                              email=f"{person.lower()}@example.com", country=country), subject=ka.id)
        return person

    def _team(self, ka: KeyAccount) -> None:
        rng = self.rng
        for _ in range(2 if rng.random() < 0.1 else 1):
            ka.global_kams.append(self._assign(ka, "global_kam", ka.country))
        ka.global_kams.sort()
        for account_id, country in ka.accounts:
            if country in ka.local_kam:
                continue
            # some local KAMs are assigned on their country's subsidiary rather than on the root
            on = account_id if account_id != ka.id and rng.random() < 0.3 else ka.id
            ka.local_kam[country] = self._assign(ka, "local_kam", country, on=on)
        if rng.random() < 0.8:
            ka.senior_kam = self._assign(ka, "senior_kam", ka.country)
        if rng.random() < 0.7:
            ka.executive_sponsor = self._assign(ka, "executive_sponsor", ka.country)
        for _ in range(rng.randint(1, 2)):
            ka.finance.append(self._assign(ka, "finance", ka.country))
        if rng.random() < 0.3:
            self._assign(ka, "country_manager", rng.choice(ka.countries))
        if rng.random() < 0.2:
            self._assign(ka, "technical", ka.country)
        if rng.random() < 0.4:
            sales = self._assign(ka, "sales", rng.choice(ka.countries))
            if rng.random() < 0.5:  # moved on: removed again (never used as agreed_by)
                self.stream.emit("team.member_removed", "crm/main",
                                 dict(account_id=ka.id, person_id=sales, role="sales", name=None, email=None,
                                      country=None), subject=ka.id)

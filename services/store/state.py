"""Reading and writing the key-account state inside one batch transaction.

The processor talks to this repository only; it turns rows into the domain values of
`services.domain` and back, and keeps a per-transaction cache so one batch does not
ask the database the same question twice.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from datetime import date
from decimal import Decimal

from sqlalchemy import and_, or_, select, tuple_, update
from sqlalchemy.engine import Connection

from services.domain import CLOSED_STATUSES, Account, Agreement, Promotion, Team, TeamMember
from services.store import tables as t
from services.store.db import insert_stmt

CHUNK = 500


def chunks(items: list, size: int = CHUNK):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _date(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def _account(row) -> Account:
    return Account(row.account_id, row.name, row.parent_id, row.country, row.tier, row.root_id)


def _agreement(row) -> Agreement:
    return Agreement(
        agreement_id=row.agreement_id, version=row.version, kind=row.kind, account_id=row.account_id,
        agreed_by=row.agreed_by, valid_from=_date(row.valid_from), valid_to=_date(row.valid_to), scope=row.scope,
        country=row.country, product_id=row.product_id, price=Decimal(row.price) if row.price is not None else None,
        currency=row.currency, contract_type=row.contract_type, status=row.status, service_id=row.service_id,
        charge=row.charge)


def _promotion(row) -> Promotion:
    return Promotion(row.promotion_id, row.country, row.product_id, Decimal(row.price), row.currency,
                     date.fromisoformat(row.valid_from), date.fromisoformat(row.valid_to), row.audience,
                     row.launched_by)


class StateRepository:
    """The state of accounts, teams, agreements and promotions as seen from one transaction."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self._accounts: dict[str, Account | None] = {}

    # -- accounts -------------------------------------------------------------------------

    def accounts(self, ids: Iterable[str]) -> dict[str, Account]:
        """Known accounts among `ids` (unknown ones are simply absent)."""
        wanted = [i for i in set(ids) if i is not None and i not in self._accounts]
        for part in chunks(wanted):
            for row in self.conn.execute(select(t.accounts).where(t.accounts.c.account_id.in_(part))):
                self._accounts[row.account_id] = _account(row)
        for i in wanted:
            self._accounts.setdefault(i, None)
        return {i: self._accounts[i] for i in set(ids) if i is not None and self._accounts.get(i) is not None}

    def account(self, account_id: str | None) -> Account | None:
        return self.accounts([account_id]).get(account_id) if account_id else None

    def root_of(self, account_id: str | None) -> str | None:
        account = self.account(account_id)
        return account.root_id if account else account_id

    def key_account_of(self, account_id: str | None) -> Account | None:
        """The key account an account belongs to, or None (unknown accounts are standalone, tier none)."""
        account = self.account(account_id)
        if account is None:
            return None
        root = self.account(account.root_id)
        return root if root is not None and root.tier != "none" else None

    def account_stamp(self, account_id: str) -> tuple[str, str] | None:
        row = self.conn.execute(select(t.accounts.c.event_time, t.accounts.c.event_id)
                                .where(t.accounts.c.account_id == account_id)).first()
        return (row.event_time, row.event_id) if row else None

    def ancestors_reach(self, start: str | None, target: str) -> bool:
        """Whether walking up from `start` through known parents reaches `target` (a cycle in the making)."""
        seen = set()
        current = start
        while current is not None and current not in seen:
            if current == target:
                return True
            seen.add(current)
            account = self.account(current)
            current = account.parent_id if account else None
        return False

    def subtree(self, account_id: str) -> list[str]:
        """The account and all its known descendants."""
        found, frontier = [account_id], [account_id]
        while frontier:
            rows = []
            for part in chunks(frontier):
                rows += self.conn.execute(select(t.accounts.c.account_id).where(t.accounts.c.parent_id.in_(part))).all()
            frontier = [r.account_id for r in rows if r.account_id not in found]
            found += frontier
        return found

    def upsert_account(self, data, event_time: str, event_id: str) -> None:
        values = dict(account_id=data.account_id, name=data.name, parent_id=data.parent_id, country=data.country,
                      tier=data.tier, root_id=data.account_id, event_time=event_time, event_id=event_id)
        stmt = insert_stmt(self.conn, t.accounts).values(**values)
        self.conn.execute(stmt.on_conflict_do_update(index_elements=["account_id"],
                                                     set_={k: v for k, v in values.items() if k != "account_id"}))
        self._accounts.pop(data.account_id, None)

    def reroot(self, account_id: str) -> dict[str, str]:
        """Recompute the root of an account's subtree; returns the old roots of the re-rooted accounts."""
        account = self.account(account_id)
        root = account_id
        seen = {account_id}
        parent = account.parent_id if account else None
        while parent is not None and parent not in seen:
            known = self.account(parent)
            if known is None:
                break
            root, parent = parent, known.parent_id
            seen.add(root)
        members = self.subtree(account_id)
        old = {}
        for part in chunks(members):
            old.update({r.account_id: r.root_id for r in self.conn.execute(
                select(t.accounts.c.account_id, t.accounts.c.root_id).where(t.accounts.c.account_id.in_(part)))})
            self.conn.execute(update(t.accounts).where(t.accounts.c.account_id.in_(part)).values(root_id=root))
        for member in members:
            self._accounts.pop(member, None)
        return old

    def accounts_in_country_roots(self, country: str) -> set[str]:
        rows = self.conn.execute(select(t.accounts.c.root_id).where(t.accounts.c.country == country).distinct())
        return {r.root_id for r in rows}

    # -- teams ----------------------------------------------------------------------------

    def team_stamp(self, account_id: str, person_id: str, role: str) -> tuple[str, str] | None:
        c = t.team_members.c
        row = self.conn.execute(select(c.event_time, c.event_id).where(
            c.account_id == account_id, c.person_id == person_id, c.role == role)).first()
        return (row.event_time, row.event_id) if row else None

    def put_team_member(self, data, present: bool, event_time: str, event_id: str) -> None:
        values = dict(account_id=data.account_id, person_id=data.person_id, role=data.role, country=data.country,
                      name=data.name, email=data.email, present=present, event_time=event_time, event_id=event_id)
        stmt = insert_stmt(self.conn, t.team_members).values(**values)
        keys = ("account_id", "person_id", "role")
        self.conn.execute(stmt.on_conflict_do_update(index_elements=list(keys),
                                                     set_={k: v for k, v in values.items() if k not in keys}))

    def teams(self, root_ids: Iterable[str]) -> dict[str, Team]:
        """The team of each key account: assignments naming any of its accounts, last writer wins per person+role."""
        roots = list(set(root_ids))
        latest: dict[str, dict[tuple[str, str], tuple]] = defaultdict(dict)
        for part in chunks(roots):
            rows = self.conn.execute(
                select(t.accounts.c.root_id, t.team_members).join(
                    t.accounts, t.accounts.c.account_id == t.team_members.c.account_id)
                .where(t.accounts.c.root_id.in_(part)))
            for row in rows:
                slot = (row.person_id, row.role)
                stamp = (row.event_time, row.event_id)
                current = latest[row.root_id].get(slot)
                if current is None or current[0] < stamp:
                    latest[row.root_id][slot] = (stamp, row)
        teams = {}
        for root in roots:
            members = tuple(TeamMember(r.person_id, r.role, r.country, r.name)
                            for _, r in latest.get(root, {}).values() if r.present)
            teams[root] = Team(members)
        return teams

    # -- agreements and promotions --------------------------------------------------------

    def agreement(self, agreement_id: str):
        return self.conn.execute(select(t.agreements).where(t.agreements.c.agreement_id == agreement_id)).first()

    def agreements_rows(self, ids: Iterable[str]) -> dict[str, object]:
        out = {}
        for part in chunks(list(set(ids))):
            out.update({r.agreement_id: r for r in self.conn.execute(
                select(t.agreements).where(t.agreements.c.agreement_id.in_(part)))})
        return out

    def put_agreement(self, values: dict) -> None:
        stmt = insert_stmt(self.conn, t.agreements).values(**values)
        self.conn.execute(stmt.on_conflict_do_update(
            index_elements=["agreement_id"], set_={k: v for k, v in values.items() if k != "agreement_id"}))

    def promotion_stamp(self, promotion_id: str) -> tuple[str, str] | None:
        c = t.promotions.c
        row = self.conn.execute(select(c.event_time, c.event_id).where(c.promotion_id == promotion_id)).first()
        return (row.event_time, row.event_id) if row else None

    def put_promotion(self, values: dict) -> None:
        stmt = insert_stmt(self.conn, t.promotions).values(**values)
        self.conn.execute(stmt.on_conflict_do_update(
            index_elements=["promotion_id"], set_={k: v for k, v in values.items() if k != "promotion_id"}))

    def roots_with_global_price(self, product_id: str, roots: set[str]) -> set[str]:
        """Which of `roots` hold a global price for the product: the key accounts a promotion may undercut."""
        found = set()
        for part in chunks(list(roots)):
            rows = self.conn.execute(
                select(t.accounts.c.root_id).distinct().join(t.agreements, t.agreements.c.account_id == t.accounts.c.account_id)
                .where(t.agreements.c.product_id == product_id, t.agreements.c.kind == "price",
                       t.agreements.c.scope == "global", t.accounts.c.root_id.in_(part)))
            found.update(r.root_id for r in rows)
        return found

    def views_material(self, root_ids: Iterable[str]):
        """Accounts, agreements and promotions of several key accounts in a few bulk queries."""
        roots = list(set(root_ids))
        accounts_by_root: dict[str, dict[str, Account]] = defaultdict(dict)
        agreements_by_root: dict[str, list[Agreement]] = defaultdict(list)
        for part in chunks(roots):
            for row in self.conn.execute(select(t.accounts).where(t.accounts.c.root_id.in_(part))):
                account = _account(row)
                accounts_by_root[row.root_id][row.account_id] = account
                self._accounts[row.account_id] = account
            for row in self.conn.execute(
                    select(t.accounts.c.root_id, t.agreements).join(
                        t.accounts, t.accounts.c.account_id == t.agreements.c.account_id)
                    .where(t.accounts.c.root_id.in_(part))):
                agreements_by_root[row.root_id].append(_agreement(row))
        wanted = set()
        for root in roots:
            products = {a.product_id for a in agreements_by_root[root] if a.kind == "price" and a.scope == "global"}
            countries = {a.country for a in accounts_by_root[root].values()}
            wanted.update((c, p) for c in countries for p in products)
        promotions_by_pair: dict[tuple[str, str], list[Promotion]] = defaultdict(list)
        for part in chunks(sorted(wanted)):
            c = t.promotions.c
            for row in self.conn.execute(select(t.promotions).where(tuple_(c.country, c.product_id).in_(part))):
                promotions_by_pair[(row.country, row.product_id)].append(_promotion(row))
        return accounts_by_root, agreements_by_root, promotions_by_pair

    # -- alerts ---------------------------------------------------------------------------

    def conflict_alerts(self, root_ids: Iterable[str], rules: Iterable[str]):
        """Open alerts of these rules, and those closed by a decision (they suppress a re-raise)."""
        c = t.alerts.c
        out = defaultdict(list)
        for part in chunks(list(set(root_ids))):
            rows = self.conn.execute(select(t.alerts).where(
                c.key_account_id.in_(part), c.rule.in_(list(rules)),
                or_(c.status.not_in(list(CLOSED_STATUSES)), c.closed_by_decision == True)))  # noqa: E712
            for row in rows:
                out[row.key_account_id].append(row)
        return out

    def key_accounts_with_open_alerts(self, rules: Iterable[str]) -> list[str]:
        c = t.alerts.c
        return sorted(self.conn.execute(select(c.key_account_id).distinct().where(
            c.rule.in_(list(rules)), c.status.not_in(list(CLOSED_STATUSES)))).scalars())

    def open_alerts_for(self, rule: str, ref_id: str):
        c = t.alerts.c
        return self.conn.execute(select(t.alerts).where(
            c.rule == rule, c.ref_id == ref_id, c.status.not_in(list(CLOSED_STATUSES)))).all()

    def open_alert_id(self, fingerprint: str) -> str | None:
        c = t.alerts.c
        return self.conn.execute(select(c.alert_id).where(
            c.fingerprint == fingerprint, c.status.not_in(list(CLOSED_STATUSES)))).scalar()

    def alert(self, alert_id: str):
        return self.conn.execute(select(t.alerts).where(t.alerts.c.alert_id == alert_id)).first()

    def alerts_key_accounts(self, alert_ids: Iterable[str]) -> dict[str, str]:
        out = {}
        for part in chunks(list(set(alert_ids))):
            out.update({r.alert_id: r.key_account_id for r in self.conn.execute(
                select(t.alerts.c.alert_id, t.alerts.c.key_account_id).where(t.alerts.c.alert_id.in_(part)))})
        return out

    def insert_alert(self, values: dict) -> None:
        self.conn.execute(t.alerts.insert().values(**values))

    def update_alert(self, alert_id: str, **values) -> None:
        self.conn.execute(update(t.alerts).where(t.alerts.c.alert_id == alert_id).values(**values))

    # -- shortages ------------------------------------------------------------------------

    def shortage_stamp(self, item_id: str) -> tuple[str, str] | None:
        row = self.conn.execute(select(t.shortages).where(t.shortages.c.item_id == item_id)).first()
        return (row.event_time, row.event_id) if row else None

    def put_shortage(self, item_id: str, event_time: str, event_id: str) -> None:
        stmt = insert_stmt(self.conn, t.shortages).values(item_id=item_id, event_time=event_time, event_id=event_id)
        self.conn.execute(stmt.on_conflict_do_update(index_elements=["item_id"],
                                                     set_={"event_time": event_time, "event_id": event_id}))


def dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=False, default=str)


__all__ = ["StateRepository", "dumps", "chunks", "and_"]

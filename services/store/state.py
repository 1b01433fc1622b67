"""Reading and writing the key-account state inside one batch transaction (a unit of work).

The processor talks to this repository only. Rows a batch needs are fetched in bulk up
front (`prefetch`) into an identity map; changes go to the map and are written back in one
bulk upsert per table (`flush`) just before any query that must see them. So a batch of
thousands of events costs a handful of statements, not several per event.
"""

from __future__ import annotations

import functools
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

import orjson
from psycopg.rows import dict_row, namedtuple_row
from sqlalchemy import Table, and_, false, literal, or_, select, tuple_, update
from sqlalchemy.engine import Connection

from services.domain import CLOSED_STATUSES, Account, Agreement, Promotion, Team, TeamMember
from services.store import tables as t
from services.store.bulk import Later, bulk_insert, fetch_rows, increment_versions, pipelined, select_by_ids, send
from services.store.db import insert_stmt, lock_keys

CHUNK = 2000  # ids per IN list: few statements per batch, far below SQLite's 32,766 variables
KEYS: dict[str, tuple[str, ...]] = {
    "accounts": ("account_id",),
    "team_members": ("account_id", "person_id", "role"),
    "agreements": ("agreement_id",),
    "promotions": ("promotion_id",),
    "shortages": ("item_id",),
    "alerts": ("alert_id",),
    "alert_evidence": ("alert_id", "evidence_id"),
}
# What events write; alerts (and their evidence) are written by judging, after them.
EVENT_STATE_TABLES = (t.accounts, t.team_members, t.agreements, t.promotions, t.shortages)
FLUSH_ORDER = (*EVENT_STATE_TABLES, t.alerts, t.alert_evidence)
# PostgreSQL texts of the reads every batch makes (SQLite builds them with SQLAlchemy).
_UNDERCUT_SQL = ("SELECT DISTINCT here.country, price.product_id, here.root_id FROM accounts AS here "
                 "JOIN accounts AS anywhere ON anywhere.root_id = here.root_id "
                 "JOIN agreements AS price ON price.account_id = anywhere.account_id "
                 "WHERE price.product_id = ANY(%(products)b::VARCHAR[]) AND price.kind = 'price' "
                 "AND price.scope = 'global'")
_KEY_VERSIONS_SQL = ("SELECT key, version, false FROM key_versions WHERE key = ANY(%(keys)b::VARCHAR[]) "
                     "UNION ALL SELECT name, value, true FROM versions WHERE name IN ('teams', 'commits')")
_COMMITS_SQL = "SELECT value FROM versions WHERE name = 'commits'"
UNVERSIONED_KEY_PREFIX = "product:"  # lock keys that guard no cached state: no version to bump or check
_TEAMS_SQL = ("SELECT accounts.root_id, " + ", ".join(f"team_members.{c.name}" for c in t.team_members.c)
              + " FROM team_members JOIN accounts ON accounts.account_id = team_members.account_id "
                "WHERE accounts.root_id = ANY(%(roots)b::VARCHAR[])")
# An account and its descendants get a new root; returns each one's previous root (the CTEs share a snapshot).
_REROOT_SQL = ("WITH RECURSIVE tree(account_id) AS ("
               "SELECT CAST(%(account_id)s AS VARCHAR) UNION "
               "SELECT a.account_id FROM accounts AS a JOIN tree ON a.parent_id = tree.account_id), "
               "old AS (SELECT a.account_id, a.root_id FROM accounts AS a JOIN tree USING (account_id)), "
               "changed AS (UPDATE accounts AS a SET root_id = %(root)s FROM old WHERE a.account_id = old.account_id) "
               "SELECT account_id, root_id FROM old")
_OPEN_ALERTS_SQL = ("SELECT " + ", ".join(c.name for c in t.alerts.c)
                    + " FROM alerts WHERE ({}) AND status <> ALL(%(closed)b::VARCHAR[])")
_PROMOTIONS_SQL = ("SELECT promotion_id, country, product_id, price, currency, valid_from, valid_to, audience, "
                   "launched_by FROM promotions WHERE country = ANY(%(countries)b::VARCHAR[]) "
                   "AND product_id = ANY(%(products)b::VARCHAR[])")
ALERT_DEFAULTS = {"versions": "", "closed_by_decision": False, "escalated": False, "awaiting_decision": False,
                  "ref_id": None, "due_at": None}


def chunks(items: list, size: int = CHUNK):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _date(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def _account(row: dict) -> Account:
    return Account(row["account_id"], row["name"], row["parent_id"], row["country"], row["tier"], row["root_id"])


def _agreement(row) -> Agreement:
    """An agreement from a stored row (any mapping of its columns).

    Filled in through its `__dict__`: a frozen dataclass's `__init__` sets each of the 16 fields with
    `object.__setattr__` (3 µs against 0.4), and a batch builds thousands. Every field is given.
    """
    agreement = _new(Agreement)
    agreement.__dict__.update(
        agreement_id=row["agreement_id"], version=row["version"], kind=row["kind"], account_id=row["account_id"],
        agreed_by=row["agreed_by"], valid_from=_date(row["valid_from"]), valid_to=_date(row["valid_to"]),
        scope=row["scope"], country=row["country"], product_id=row["product_id"],
        price=Decimal(row["price"]) if row["price"] is not None else None, currency=row["currency"],
        contract_type=row["contract_type"], status=row["status"], service_id=row["service_id"], charge=row["charge"])
    return agreement


_new = object.__new__


@functools.lru_cache(maxsize=65536)
def _promotion(promotion_id: str, country: str, product_id: str, price: str, currency: str, valid_from: str,
               valid_to: str, audience: str, launched_by: str) -> Promotion:
    """A promotion from its stored columns; built once per distinct version (every batch re-reads them)."""
    return Promotion(promotion_id, country, product_id, Decimal(price), currency, date.fromisoformat(valid_from),
                     date.fromisoformat(valid_to), audience, launched_by)


def _built_once(built: dict, key: str, row: dict, build: Callable):
    """The object `build` makes of a row, made once per row object (rows are replaced, never changed in place)."""
    known = built.get(key)
    if known is None or known[0] is not row:
        known = (row, build(row))
        built[key] = known
    return known[1]


def is_open(row: dict) -> bool:
    return row["status"] not in CLOSED_STATUSES


class MasterDataCache:
    """Key-account teams and account rows kept across transactions by one process.

    Valid only while the store's `teams` version is the one it was filled at: every transaction
    that changes accounts or team members bumps that version, so a process notices any change,
    its own or another's, at the next transaction (read after that transaction's locks).
    """

    def __init__(self, limit: int = 200_000):
        self.version: int | None = None
        self.teams: dict[str, Team] = {}
        self.accounts: dict[tuple, dict | None] = {}  # (account_id,) -> row, None when it does not exist
        self.limit = limit

    def align(self, version: int) -> None:
        if version != self.version or len(self.teams) + len(self.accounts) > self.limit:
            self.teams.clear()
            self.accounts.clear()
            self.version = version


@dataclass
class KeyAccountState:
    """Everything conflict judging reads of one key account: its accounts, agreements and conflict alerts."""

    accounts: dict[str, Account] = field(default_factory=dict)
    agreements: dict[str, Agreement] = field(default_factory=dict)
    alerts: dict[str, dict] = field(default_factory=dict)  # conflict alerts open or closed by a decision

    def copy(self) -> "KeyAccountState":
        return KeyAccountState(dict(self.accounts), dict(self.agreements), dict(self.alerts))


class KeyAccountCache:
    """Key-account states and lock-key versions kept across transactions by one process.

    A state is used only while its key's version in `key_versions` is the one this process
    committed last: every transaction bumps the versions of the keys it locked, so a change by
    another process (or one rolled back here) shows as a different version and the state is
    read again. The cache changes only after a commit.
    """

    def __init__(self, limit: int = 5_000):
        self.versions: dict[str, int] = {}
        self.states: OrderedDict[str, KeyAccountState] = OrderedDict()
        self.agreement_root: dict[str, str] = {}
        self.rules: frozenset[str] = frozenset()  # the alert rules a state keeps
        self._met: OrderedDict[str, None] = OrderedDict()
        self.limit = limit

    def met_before(self, root: str) -> bool:
        """Whether this key account was judged recently; notes that it is now."""
        if root in self._met:
            self._met.move_to_end(root)
            return True
        self._met[root] = None
        while len(self._met) > 4 * self.limit:
            self._met.popitem(last=False)
        return False

    def clear(self) -> None:
        self.versions.clear()
        self.states.clear()
        self.agreement_root.clear()

    def drop(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.states.pop(key, None)

    def get(self, root: str) -> KeyAccountState | None:
        state = self.states.get(root)
        if state is not None:
            self.states.move_to_end(root)
        return state

    def store(self, root: str, state: KeyAccountState) -> None:
        self.states[root] = state
        self.states.move_to_end(root)
        for agreement_id in state.agreements:
            self.agreement_root[agreement_id] = root
        while len(self.states) > self.limit:
            _, evicted = self.states.popitem(last=False)
            for agreement_id in evicted.agreements:
                self.agreement_root.pop(agreement_id, None)


class StateRepository:
    """The state of accounts, teams, agreements, promotions and alerts as seen from one transaction."""

    def __init__(self, conn: Connection, master_cache: MasterDataCache | None = None,
                 key_cache: KeyAccountCache | None = None):
        self.conn = conn
        self._postgres = conn.dialect.name == "postgresql"
        self._master_cache = master_cache
        self._master_cache_checked = False
        self._master_version: int | None = None
        self.optimistic_master = False  # use the master cache unchecked until validate_keys (reads before locks)
        self._key_cache = key_cache
        self._valid_keys: set[str] = set()  # lock keys whose cached state is current (checked under the lock)
        self._bumped: dict[str, int] = {}
        self._bumping = Later(rows=[])  # the new versions of `bump_keys`, read after the write pipeline
        self._written: dict[str, dict[tuple, dict]] = defaultdict(dict)
        self._states_read: dict[str, KeyAccountState] = {}
        self._accounts_built: dict[str, tuple[dict, Account]] = {}
        self._agreements_built: dict[str, tuple[dict, Agreement]] = {}
        self._agreement_roots: dict[str, str | None] = {}
        self._changes_teams = False
        self._rows: dict[str, dict[tuple, dict | None]] = defaultdict(dict)
        self._pending: dict[str, dict[tuple, dict]] = defaultdict(dict)
        self._teams: dict[str, Team] = {}
        self._has_children: dict[str, bool] = {}
        self._alerts_by_ref: dict[tuple[str, str | None], set[str]] = defaultdict(set)
        self._undercut: dict[tuple[str, str], set[str]] = {}
        self._commits_at_start = Later(rows=[])  # the store's `commits` version before this transaction read
        self._nobody_committed = False  # ... and it is the same under the locks `validate_keys` checked last

    # -- identity map ---------------------------------------------------------------------

    def prefetch(self, table: Table, keys: Iterable[tuple]) -> None:
        """Load the rows of `keys` not yet known, in bulk; remember which do not exist."""
        names = KEYS[table.name]
        known = self._rows[table.name]
        wanted = [k for k in set(keys) if k not in known and all(part is not None for part in k)]
        shared = self._shared().accounts if table is t.accounts and self._shared() is not None else None
        if shared is not None:
            for key in [k for k in wanted if k in shared]:
                known[key] = dict(shared[key]) if shared[key] is not None else None
            wanted = [k for k in wanted if k not in known]
        columns = [table.c[n] for n in names]
        for part in chunks(wanted):
            if len(names) == 1 and self.conn.dialect.name == "postgresql":
                for mapping in select_by_ids(self.conn, table, names[0], [k[0] for k in part]):
                    known[(mapping[names[0]],)] = mapping
                continue
            clause = columns[0].in_([k[0] for k in part]) if len(names) == 1 else tuple_(*columns).in_(part)
            for row in self.conn.execute(select(table).where(clause)):
                mapping = dict(row._mapping)
                known[tuple(mapping[n] for n in names)] = mapping
        for key in wanted:
            known.setdefault(key, None)
            if shared is not None:
                shared[key] = dict(known[key]) if known[key] is not None else None

    def get(self, table: Table, *key) -> dict | None:
        if key not in self._rows[table.name]:
            self.prefetch(table, [key])
        return self._rows[table.name].get(key)

    def known(self, table: Table, *key) -> dict | None:
        """The row if this transaction has read or written it already; never a query."""
        return self._rows[table.name].get(key)

    def changed_rows(self, ids: Iterable[str]) -> dict[str, dict]:
        """The agreement or promotion row of each id (written or stored), in at most one query per table."""
        ids = set(ids)
        unknown = [(i,) for i in ids if self.known(t.agreements, i) is None and self.known(t.promotions, i) is None]
        self.prefetch(t.agreements, unknown)
        self.prefetch(t.promotions, [key for key in unknown if self.known(t.agreements, *key) is None])
        return {i: row for i in ids if (row := self.known(t.agreements, i) or self.known(t.promotions, i)) is not None}

    def put(self, table: Table, row: dict) -> None:
        key = tuple(row[n] for n in KEYS[table.name])
        self._rows[table.name][key] = row
        self._pending[table.name][key] = row
        self._written[table.name][key] = row
        if table is t.alerts:
            self._alerts_by_ref[(row["rule"], row["ref_id"])].add(row["alert_id"])
        elif table is t.agreements:
            if row["kind"] == "price" and row["scope"] == "global" and self._undercut:
                # a promotion of this product launched later in the batch may undercut this key account
                for pair in [p for p in self._undercut if p[1] == row["product_id"]]:
                    del self._undercut[pair]
        elif table is t.accounts:
            self._changes_teams = True
            self._teams.clear()
            self._undercut.clear()  # the account may bring its key account into another country
            if row["parent_id"] is not None:
                self._has_children[row["parent_id"]] = True
        elif table is t.team_members:
            self._changes_teams = True
            self._teams.pop(self.root_of(row["account_id"]), None)

    def has_pending(self, *tables: Table) -> bool:
        """Whether any of `tables` has changes not yet written."""
        return any(self._pending.get(table.name) for table in tables)

    def flush(self, *tables: Table) -> None:
        """Write the pending changes of `tables` (all when none are named), one bulk upsert per table.

        Reads flush only the tables they read, so in the steady state most writes wait for the
        end of the batch and go out together in one pipeline.
        """
        wanted = {table.name for table in (tables or FLUSH_ORDER)}
        if "alert_evidence" in wanted:
            wanted.add("alerts")  # evidence rows refer to their alert
        if self._changes_teams and ({"accounts", "team_members"} & wanted) and (
                self._pending.get("accounts") or self._pending.get("team_members")):
            wanted.update(("accounts", "team_members"))
            self.conn.execute(update(t.versions).where(t.versions.c.name == "teams")
                              .values(value=t.versions.c.value + 1))
        for table in FLUSH_ORDER:
            if table.name not in wanted:
                continue
            pending = self._pending.pop(table.name, None)
            if not pending:
                continue
            rows = list(pending.values())
            if table is t.alerts:
                # Closing statements first: an alert resolved and its successor opened in one batch share a
                # fingerprint, which one open alert at a time may hold (checked row by row, not per statement).
                closing = [row for row in rows if not is_open(row)]
                bulk_insert(self.conn, table, closing, conflict=KEYS[table.name], update=True)
                rows = [row for row in rows if is_open(row)]
            bulk_insert(self.conn, table, rows, conflict=KEYS[table.name], update=True)

    def forget_accounts(self, ids: Iterable[str]) -> None:
        for account_id in ids:
            self._rows["accounts"].pop((account_id,), None)
        self._teams.clear()

    def forget_all(self) -> None:
        """Drop what was read before the locks were taken (it may be stale); pending writes stay."""
        self.flush()
        self._rows.clear()
        self._teams.clear()
        self._has_children.clear()
        self._alerts_by_ref.clear()
        self._undercut.clear()

    # -- accounts -------------------------------------------------------------------------

    def accounts(self, ids: Iterable[str]) -> dict[str, Account]:
        """Known accounts among `ids` (unknown ones are simply absent)."""
        ids = [i for i in set(ids) if i is not None]
        self.prefetch(t.accounts, [(i,) for i in ids])
        rows = self._rows["accounts"]
        return {i: self._as_account(rows[(i,)]) for i in ids if rows.get((i,)) is not None}

    def account(self, account_id: str | None) -> Account | None:
        if account_id is None:
            return None
        row = self.get(t.accounts, account_id)
        return self._as_account(row) if row is not None else None

    def _as_agreement(self, row: dict) -> Agreement:
        return _built_once(self._agreements_built, row["agreement_id"], row, _agreement)

    def _as_account(self, row: dict) -> Account:
        return _built_once(self._accounts_built, row["account_id"], row, _account)

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

    def prefetch_children(self, account_ids: Iterable[str]) -> None:
        """Learn in one query which of these accounts have stored children (most have none)."""
        self.flush(t.accounts)
        wanted = [i for i in set(account_ids) if i is not None and i not in self._has_children]
        for part in chunks(wanted):
            parents = set(self.conn.execute(select(t.accounts.c.parent_id).distinct()
                                            .where(t.accounts.c.parent_id.in_(part))).scalars())
            self._has_children.update({i: i in parents for i in part})

    def _may_have_children(self, account_id: str) -> bool:
        if account_id not in self._has_children:
            self.prefetch_children([account_id])
        return self._has_children[account_id]

    def subtree(self, account_id: str) -> list[str]:
        """The account and all its known descendants."""
        self.flush(t.accounts)
        found, frontier = [account_id], [account_id]
        while frontier:
            rows = []
            for part in chunks(frontier):
                rows += self.conn.execute(select(t.accounts.c.account_id).where(t.accounts.c.parent_id.in_(part))).all()
            frontier = [r.account_id for r in rows if r.account_id not in found]
            found += frontier
        return found

    def root_through_parents(self, account_id: str) -> str:
        """The topmost known ancestor (the account itself without a known parent)."""
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
        return root

    def reroot(self, account_id: str) -> dict[str, str]:
        """Give an account (and its known descendants) the root its parent chain now leads to.

        Returns the previous roots of the accounts whose root changed. Accounts without
        children (nearly all) are settled in memory without a query.
        """
        root = self.root_through_parents(account_id)
        row = self.get(t.accounts, account_id)
        if not self._may_have_children(account_id):
            if row["root_id"] == root:
                return {}
            self.put(t.accounts, dict(row, root_id=root))
            return {account_id: row["root_id"]}
        if self._postgres:  # the whole subtree in one statement, not a query per level and two per chunk
            self.flush(t.accounts)
            old = dict(fetch_rows(self.conn, _REROOT_SQL, {"account_id": account_id, "root": root}))
            self.forget_accounts(list(old))
            return {member: previous for member, previous in old.items() if previous != root}
        members = self.subtree(account_id)
        old = {}
        for part in chunks(members):
            old.update({r.account_id: r.root_id for r in self.conn.execute(
                select(t.accounts.c.account_id, t.accounts.c.root_id).where(t.accounts.c.account_id.in_(part)))})
            self.conn.execute(update(t.accounts).where(t.accounts.c.account_id.in_(part)).values(root_id=root))
        self.forget_accounts(members)
        return {member: previous for member, previous in old.items() if previous != root}

    def prefetch_undercut(self, pairs: Iterable[tuple[str, str]]) -> None:
        """For (country, product) pairs, the roots with an account in the country and a global price for the product.

        Cached for the batch until an account or a global price it may not include is written (`put`).
        """
        wanted = sorted({p for p in pairs if p not in self._undercut})
        if not wanted:
            return
        self.flush(t.accounts, t.agreements)
        here, anywhere, price = t.accounts.alias("here"), t.accounts.alias("anywhere"), t.agreements
        for pair in wanted:
            self._undercut[pair] = set()
        # Driven by the product index, pairs checked here: a list of (country, product) tuples becomes
        # a chain of ORs that PostgreSQL evaluates row by row after a sequential scan.
        for part in chunks(sorted({p for _, p in wanted})):
            if self._postgres:
                rows = fetch_rows(self.conn, _UNDERCUT_SQL, {"products": part})
            else:
                rows = self.conn.execute(
                    select(here.c.country, price.c.product_id, here.c.root_id).distinct()
                    .join(anywhere, anywhere.c.root_id == here.c.root_id)
                    .join(price, price.c.account_id == anywhere.c.account_id)
                    .where(price.c.product_id.in_(part), price.c.kind == "price", price.c.scope == "global"))
            for country, product_id, root_id in rows:
                if (country, product_id) in self._undercut:
                    self._undercut[(country, product_id)].add(root_id)

    def key_accounts_undercut_in(self, country: str, product_id: str) -> set[str]:
        """Roots a promotion in `country` for `product_id` may undercut (see `prefetch_undercut`)."""
        self.prefetch_undercut([(country, product_id)])
        return self._undercut[(country, product_id)]

    # -- teams ----------------------------------------------------------------------------

    def teams(self, root_ids: Iterable[str]) -> dict[str, Team]:
        """The team of each key account: assignments naming any of its accounts, last writer wins per person+role."""
        roots = set(root_ids)
        cache = self._shared()
        shared = cache.teams if cache is not None else None
        if shared is not None:
            for root in roots:
                if root not in self._teams and root in shared:
                    self._teams[root] = shared[root]
        missing = [r for r in roots if r not in self._teams]
        if missing:
            self.flush(t.accounts, t.team_members)
            latest: dict[str, dict[tuple[str, str], tuple]] = defaultdict(dict)
            for part in chunks(missing):
                rows = (fetch_rows(self.conn, _TEAMS_SQL, {"roots": part}, namedtuple_row) if self._postgres
                        else self.conn.execute(select(t.accounts.c.root_id, t.team_members).join(
                            t.accounts, t.accounts.c.account_id == t.team_members.c.account_id)
                            .where(t.accounts.c.root_id.in_(part))))
                for row in rows:
                    slot = (row.person_id, row.role)
                    stamp = (row.event_time, row.event_id)
                    current = latest[row.root_id].get(slot)
                    if current is None or current[0] < stamp:
                        latest[row.root_id][slot] = (stamp, row)
            for root in missing:
                self._teams[root] = Team(tuple(TeamMember(r.person_id, r.role, r.country, r.name)
                                               for _, r in latest.get(root, {}).values() if r.present))
                if shared is not None:
                    shared[root] = self._teams[root]
        return {root: self._teams[root] for root in roots}

    def _shared(self) -> MasterDataCache | None:
        """The process-wide master-data cache, when this transaction may use it (it has changed none itself)."""
        if self._master_cache is None or self._changes_teams:
            return None
        if not self._master_cache_checked:
            if self.optimistic_master and self._master_cache.version is not None:
                self._master_version = self._master_cache.version  # validate_keys checks it under the locks
                return self._master_cache
            version = self.conn.execute(select(t.versions.c.value).where(t.versions.c.name == "teams")).scalar()
            self._master_version = version if version is not None else -1
            self._master_cache.align(self._master_version)
            self._master_cache_checked = True
        return self._master_cache

    # -- agreements and promotions --------------------------------------------------------

    def key_account_states(self, roots: Iterable[str], reread: set[str], rules: Iterable[str],
                           changed: dict[str, set[str]] | None = None) -> dict[str, KeyAccountState]:
        """The accounts, agreements and conflict alerts (of `rules`) of each key account, as of now.

        From the process cache where the key's version proved it current, with this transaction's
        own writes laid over it; the others (and every root in `reread`, whose accounts changed)
        are read in a few bulk queries and cached when the transaction commits. A key account met
        for the first time where only some agreements changed (`changed`: root -> their ids) is
        read only as far as those can conflict, and not cached: in a large store most key accounts
        are touched rarely, and reading all of their agreements would cost more than it saves.
        """
        changed = changed or {}
        rules = sorted(set(rules))
        roots = sorted(set(roots))
        cache = self._key_cache
        if cache is not None and cache.rules != frozenset(rules):
            cache.states.clear()
            cache.rules = frozenset(rules)
        states: dict[str, KeyAccountState] = {}
        missing = []
        for root in roots:
            cached = cache.get(root) if cache is not None and root in self._valid_keys and root not in reread else None
            if cached is None:
                missing.append(root)
            else:
                states[root] = cached.copy()
        first_met = [root for root in missing if root in changed and root not in reread and cache is not None
                     and not cache.met_before(root)]
        self._overlay_writes(states, rules)
        if missing:
            self.flush(t.accounts, t.agreements, t.promotions, t.alerts, t.alert_evidence)
        full = self._read_states(sorted(set(missing) - set(first_met)), rules)
        states.update(full)
        states.update(self._read_states(first_met, rules, sorted({i for root in first_met for i in changed[root]})))
        for state in states.values():
            known = self._rows["alerts"]
            for alert_id, row in state.alerts.items():
                if known.get((alert_id,)) is None:
                    known[(alert_id,)] = row
        self._states_read.update({root: state for root, state in states.items() if root not in first_met})
        return states

    def _read_states(self, roots: list[str], rules: list[str],
                     related_to: list[str] | None = None) -> dict[str, KeyAccountState]:
        """Key-account states from the store: all accounts, and all agreements and conflict alerts, or
        with `related_to` (changed agreement or promotion ids) only those that can conflict with them."""
        states = {root: KeyAccountState() for root in roots}
        if not roots:
            return states
        a, g, c, e = t.accounts, t.agreements.c, t.alerts.c, t.alert_evidence.c
        alert_filter = (c.rule.in_(rules),
                        or_(c.status.not_in(list(CLOSED_STATUSES)), c.closed_by_decision == True))  # noqa: E712
        related = None
        if related_to is not None:
            products, services, contract_types = related_terms(self.changed_rows(related_to).values())
            related = or_(g.agreement_id.in_(related_to),
                          g.product_id.in_(sorted(products)) if products else false(),
                          g.service_id.in_(sorted(services)) if services else false(),
                          and_(g.scope == "global", g.contract_type.in_(sorted(contract_types)))
                          if contract_types else false())
        for part in chunks(roots):
            for row in self.conn.execute(select(a).where(a.c.root_id.in_(part))):
                mapping = dict(row._mapping)
                self._rows["accounts"][(row.account_id,)] = mapping
                states[row.root_id].accounts[row.account_id] = _account(mapping)
            agreements = select(a.c.root_id, t.agreements).join(a, a.c.account_id == g.account_id).where(
                a.c.root_id.in_(part))
            if related is None:
                alerts = select(t.alerts).where(c.key_account_id.in_(part), *alert_filter)
            else:
                agreements = agreements.where(related)
                # Driven from the evidence index: a key account may have many alerts, a change touches few.
                alerts = (select(t.alerts).join(t.alert_evidence, e.alert_id == c.alert_id)
                          .where(e.evidence_id.in_(related_to), c.key_account_id.in_(part), *alert_filter)
                          .distinct())
            for row in self.conn.execute(agreements):
                states[row.root_id].agreements[row.agreement_id] = _agreement(row._mapping)
            for mapping in self._remember_alerts(r._mapping for r in self.conn.execute(alerts)):
                states[mapping["key_account_id"]].alerts[mapping["alert_id"]] = mapping
        return states

    def _overlay_writes(self, states: dict[str, KeyAccountState], rules: Iterable[str]) -> None:
        """Lay this transaction's agreement and conflict-alert writes over (copies of) cached states."""
        if states:
            index = self._key_cache.agreement_root if self._key_cache is not None else {}
            self._lay_writes(states, set(rules), self._written_agreement_roots(), index, update_index=False)

    def _written_agreement_roots(self) -> dict[str, str | None]:
        """The key account of every agreement this transaction wrote (None if its account is unknown)."""
        written = self._written.get("agreements", {})
        self.accounts({row["account_id"] for row in written.values()})  # one query, not one per agreement
        return {row["agreement_id"]: self._known_root(row["account_id"]) for row in written.values()}

    def _lay_writes(self, states: dict[str, KeyAccountState], rules: set[str] | frozenset[str],
                    roots: dict[str, str | None], index: dict[str, str], *, update_index: bool) -> None:
        """Apply the written agreements (moving one whose key account changed) and conflict alerts to `states`;
        `index` (agreement id -> key account) is followed, and kept up to date with `update_index`."""
        for row in self._written.get("agreements", {}).values():
            agreement_id, root = row["agreement_id"], roots[row["agreement_id"]]
            previous = index.pop(agreement_id, None) if update_index else index.get(agreement_id)
            if previous is not None and previous != root and previous in states:
                states[previous].agreements.pop(agreement_id, None)
            if root in states:
                states[root].agreements[agreement_id] = self._as_agreement(row)
                if update_index:
                    index[agreement_id] = root
        for row in self._written.get("alerts", {}).values():
            state = states.get(row["key_account_id"])
            if state is None or row["rule"] not in rules:
                continue
            if is_open(row) or row["closed_by_decision"]:
                state.alerts[row["alert_id"]] = row
            else:
                state.alerts.pop(row["alert_id"], None)

    def _known_root(self, account_id: str | None) -> str | None:
        """The root of a known account; None for unknown ones (their agreements belong to no key account)."""
        account = self.account(account_id)
        return account.root_id if account is not None else None

    def promotions_for(self, pairs: set[tuple[str, str]]) -> dict[tuple[str, str], list[Promotion]]:
        """The promotions of these (country, product) pairs."""
        self.flush(t.promotions)
        promotions_by_pair: dict[tuple[str, str], list[Promotion]] = defaultdict(list)
        countries, products = sorted({c for c, _ in pairs}), sorted({p for _, p in pairs})
        c = t.promotions.c
        columns = (c.promotion_id, c.country, c.product_id, c.price, c.currency, c.valid_from, c.valid_to, c.audience,
                   c.launched_by)
        for part in chunks(products):
            rows = (fetch_rows(self.conn, _PROMOTIONS_SQL, {"countries": countries, "products": part}) if self._postgres
                    else self.conn.execute(select(*columns).where(c.country.in_(countries), c.product_id.in_(part))))
            for row in rows:
                if (row[1], row[2]) in pairs:
                    promotions_by_pair[(row[1], row[2])].append(_promotion(*row))
        return promotions_by_pair

    # -- lock keys and their versions -----------------------------------------------------

    def note_commits(self) -> None:
        """PostgreSQL, before this transaction's first read: send a read of the store's `commits` version.

        If `validate_keys` finds it unchanged under the locks, no transaction committed in between:
        what this one read from the store before the locks is current. (What the process caches
        from earlier transactions is still checked key by key, and master data by its version.)
        """
        if self._postgres:
            self._commits_at_start = send(self.conn, _COMMITS_SQL, {})

    def lock_and_validate(self, keys: Iterable[str]) -> bool:
        """Lock `keys` (see `lock_keys`) and `validate_keys` them; on PostgreSQL in one round trip.

        The version read is a statement of its own, after the lock's: under READ COMMITTED it
        sees what the lock holders before us committed.
        """
        keys = sorted(set(keys))
        if not self._postgres:  # nothing to lock: BEGIN IMMEDIATE made this transaction the only writer
            return self.validate_keys(keys)
        versioned = _versioned(keys)
        with pipelined(self.conn):
            lock_keys(self.conn, keys)
            versions = send(self.conn, _KEY_VERSIONS_SQL, {"keys": versioned})
        return self.validate_keys(versioned, versions.rows())

    def validate_keys(self, keys: Iterable[str], rows: list[tuple] | None = None) -> bool:
        """Check, under the locks of `keys`, which cached key states are current; True if what this
        transaction read before the locks is current: all of them are, or no transaction committed
        since it started (`note_commits`).

        Also False when master data (accounts, teams) changed since this transaction first read it.
        `rows` are those of `_KEY_VERSIONS_SQL` if already read (PostgreSQL).
        """
        keys = _versioned(sorted(set(keys)))
        cache = self._key_cache
        found: dict[str, int] = {}
        masters: dict[str, int] = {}
        if rows is None and self._postgres:
            rows = fetch_rows(self.conn, _KEY_VERSIONS_SQL, {"keys": keys})
        elif rows is None:
            v = t.key_versions.c
            master_version = select(t.versions.c.name.label("key"), t.versions.c.value.label("version"),
                                    literal(True).label("master")).where(t.versions.c.name.in_(["teams", "commits"]))
            rows = []
            for i, part in enumerate(chunks(keys)):
                query = select(v.key, v.version, literal(False).label("master")).where(v.key.in_(part))
                rows += self.conn.execute(query.union_all(master_version) if i == 0 else query).all()
        for key, version, is_master in rows:
            if is_master:
                masters[key] = version
            else:
                found[key] = version
        master = masters.get("teams", -1)
        started_at = self._commits_at_start.rows()
        self._nobody_committed = bool(started_at) and started_at[0][0] == masters.get("commits")
        master_unchanged = self._master_version is None or self._master_version == master
        if self._master_cache is not None and not self._changes_teams:
            self._master_cache.align(master)  # read under the locks: trusted for the rest of the transaction
            self._master_version = master
            self._master_cache_checked = True
        self.optimistic_master = False
        current = {key for key in keys if cache is not None and cache.versions.get(key) == found.get(key, 0)}
        if cache is not None:
            cache.drop(set(keys) - current)
        self._valid_keys.update(current)
        return master_unchanged and (len(current) == len(keys) or self._nobody_committed)

    def forget_derived(self) -> None:
        """After `validate_keys` found the rows read before the locks current: forget what was derived
        across key accounts from them (which roots a promotion undercuts, which accounts have children).

        Both are kept if no transaction committed since this one started (`note_commits`).
        """
        if not self._nobody_committed:
            self._undercut.clear()
            self._has_children.clear()

    def bump_keys(self, keys: Iterable[str]) -> None:
        """Count one more change under each of these lock keys (call while holding their locks) and, on
        PostgreSQL if the transaction wrote state, bump the store's `commits` version (`note_commits`).
        Every writing transaction calls this, as late as it can: the `commits` row stays locked until
        the transaction ends.

        The new versions are read by `read_returned`, after the write pipeline.
        """
        # SQLite: one writer at a time, nobody reads it
        if self._postgres and any(self._written.values()):
            send(self.conn, "UPDATE versions SET value = value + 1 WHERE name = 'commits'", {}, prepare=None)
        keys = _versioned(sorted(set(keys)))
        if not keys:
            return
        self._bumping = increment_versions(self.conn, keys)

    def read_returned(self) -> None:
        """Read what the writes returned (the new key versions), now that their pipeline has ended."""
        self._bumped = dict(self._bumping.rows())

    def before_commit(self) -> None:
        """Settle, while the transaction is open, the key account of every agreement it wrote."""
        if self._key_cache is not None and self._written.get("agreements"):
            self._agreement_roots = self._written_agreement_roots()

    def after_commit(self) -> None:
        """The transaction committed: keep what it read and wrote of key accounts for the next one.

        Uses only what the transaction already knows (no query: the connection is gone); should
        anything go wrong here, the whole cache is dropped, which is always safe.
        """
        cache = self._key_cache
        if cache is None:
            return
        try:
            self._remember_committed(cache)
        except Exception:
            cache.clear()
            raise

    def _remember_committed(self, cache: KeyAccountCache) -> None:
        for root, state in self._states_read.items():
            if root in self._bumped:
                cache.store(root, state)
        for key, version in self._bumped.items():
            cache.versions[key] = version
        if len(cache.versions) > 40 * cache.limit:  # forgetting a version only costs a re-read
            cache.versions = {key: cache.versions[key] for key in cache.states if key in cache.versions}
        self._lay_writes(cache.states, cache.rules, self._agreement_roots, cache.agreement_root, update_index=True)

    # -- alerts ---------------------------------------------------------------------------

    def _remember_alerts(self, rows) -> list[dict]:
        """Put fetched alert rows (mappings) into the identity map, keeping any newer version already there."""
        out = []
        known = self._rows["alerts"]
        for row in rows:
            key = (row["alert_id"],)
            if known.get(key) is None:
                known[key] = dict(row)
                self._alerts_by_ref[(row["rule"], row["ref_id"])].add(row["alert_id"])
            out.append(known[key])
        return out

    def prefetch_open_alerts(self, refs_by_rule: dict[str, Iterable[str]]) -> None:
        """Load the open alerts of rules for these references (dunning ids, stock items), in one query."""
        self.flush(t.alerts)
        c = t.alerts.c
        pairs = [(rule, ref) for rule, refs in refs_by_rule.items() for ref in set(refs)]
        for part in chunks(pairs):
            by_rule = defaultdict(list)
            for rule, ref in part:
                by_rule[rule].append(ref)
            if self._postgres:
                rules = sorted(by_rule)
                sql = _OPEN_ALERTS_SQL.format(" OR ".join(
                    f"(rule = %(rule{i})s AND ref_id = ANY(%(refs{i})b::VARCHAR[]))" for i in range(len(rules))))
                params = {"closed": sorted(CLOSED_STATUSES)}
                for i, rule in enumerate(rules):
                    params[f"rule{i}"], params[f"refs{i}"] = rule, by_rule[rule]
                self._remember_alerts(fetch_rows(self.conn, sql, params, dict_row))
                continue
            self._remember_alerts(r._mapping for r in self.conn.execute(select(t.alerts).where(
                or_(*(and_(c.rule == rule, c.ref_id.in_(refs)) for rule, refs in by_rule.items())),
                c.status.not_in(list(CLOSED_STATUSES)))))

    def open_alerts_for(self, rule: str, ref_id: str) -> list[dict]:
        """Open alerts of a rule about one reference (after `prefetch_open_alerts` for it)."""
        ids = self._alerts_by_ref.get((rule, ref_id))
        if not ids:
            return []
        rows = self._rows["alerts"]
        # A closed alert never opens again: forget it here, or repeated shortages of one item in a
        # batch would look through every alert they closed, again and again.
        ids.difference_update([alert_id for alert_id in ids if not is_open(rows[(alert_id,)])])
        return [rows[(alert_id,)] for alert_id in sorted(ids)]

    def alert(self, alert_id: str) -> dict | None:
        return self.get(t.alerts, alert_id)

    def alerts_key_accounts(self, alert_ids: Iterable[str]) -> dict[str, str]:
        self.prefetch(t.alerts, [(i,) for i in alert_ids])
        return {k[0]: row["key_account_id"] for k, row in self._rows["alerts"].items() if row is not None}

    def key_accounts_with_open_alerts(self, rules: Iterable[str]) -> list[str]:
        c = t.alerts.c
        return sorted(self.conn.execute(select(c.key_account_id).distinct().where(
            c.rule.in_(list(rules)), c.status.not_in(list(CLOSED_STATUSES)))).scalars())


def _versioned(keys: list[str]) -> list[str]:
    return [key for key in keys if not key.startswith(UNVERSIONED_KEY_PREFIX)]


def related_agreements(repo: StateRepository,
                       changed: dict[str, set[str]]) -> Callable[[str, list[Agreement]], list[Agreement]]:
    """A filter keeping the agreements of a key account that can form a conflict with one that changed there.

    Related are the changed agreements (or promotions) themselves, prices of the same products,
    services of the same service ids and global contracts of the same types. (The term sets never
    hold None, so an agreement without a product or service id matches none.)
    """
    rows = repo.changed_rows({i for ids in changed.values() for i in ids})
    by_root = {root: (ids, *related_terms(rows[i] for i in ids if i in rows)) for root, ids in changed.items()}

    def related(root: str, agreements: list[Agreement]) -> list[Agreement]:
        ids, products, services, contract_types = by_root[root]
        return [a for a in agreements if a.agreement_id in ids or a.product_id in products or a.service_id in services
                or (a.scope == "global" and a.contract_type in contract_types)]

    return related


def related_terms(rows: Iterable[dict]) -> tuple[set[str], set[str], set[str]]:
    """The products, service ids and contract types of changed agreements or promotions."""
    rows = list(rows)
    return ({r["product_id"] for r in rows if r["product_id"]}, {r["service_id"] for r in rows if r.get("service_id")},
            {r["contract_type"] for r in rows if r.get("contract_type")})


def add_to_counters(conn: Connection, instance: str, counts: dict[str, int]) -> None:
    """Add to this instance's ops counters (one row per instance and name: no hot row to contend on)."""
    counts = {name: value for name, value in counts.items() if value}
    if counts and conn.dialect.name == "postgresql":  # one fixed statement: prepared once, not compiled per batch
        with conn.connection.dbapi_connection.cursor() as cursor:
            cursor.execute("INSERT INTO counters (instance, name, value) SELECT %(instance)s, n, v "
                           "FROM unnest(%(names)s::VARCHAR[], %(values)s::INTEGER[]) AS u(n, v) "
                           "ON CONFLICT (instance, name) DO UPDATE SET value = counters.value + EXCLUDED.value",
                           {"instance": instance, "names": list(counts), "values": list(counts.values())})
    elif counts:
        stmt = insert_stmt(conn, t.counters)
        conn.execute(stmt.on_conflict_do_update(index_elements=["instance", "name"],
                                                set_={"value": t.counters.c.value + stmt.excluded.value}),
                     [{"instance": instance, "name": name, "value": value} for name, value in counts.items()])


def new_alert_row(**values) -> dict:
    return {**ALERT_DEFAULTS, **values}


_DUMP_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps(value) -> str:
    """Compact JSON; values JSON lacks (decimals, dates, dataclasses) as their `str`.

    orjson, because encoding every output and alert column was 8 % of the processing time.
    """
    return orjson.dumps(value, default=str, option=_DUMP_OPTIONS).decode()


def account_from_row(row: dict) -> Account:
    """An account from a stored row."""
    return _account(row)


def agreement_from_row(row: dict) -> Agreement:
    """An agreement from a stored row."""
    return _agreement(row)

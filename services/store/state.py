"""Reading and writing the key-account state inside one batch transaction (a unit of work).

The processor talks to this repository only. Rows a batch needs are fetched in bulk up
front (`prefetch`) into an identity map; changes go to the map and are written back in one
bulk upsert per table (`flush`) just before any query that must see them. So a batch of
thousands of events costs a handful of statements, not several per event.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterable

import orjson
from psycopg.rows import dict_row
from sqlalchemy import Table, select
from sqlalchemy.engine import Connection

from services.domain import CLOSED_STATUSES, Account, Agreement, Promotion, Team
from services.store import tables as t
from services.store.bulk import (Later, bulk_insert, fetch_rows, pipelined, select_by_ids_sql, select_by_keys,
                                 send, sqlite_rows)
from services.store.caches import KeyAccountCache, KeyAccountState, MasterDataCache
from services.store.coherence import UNVERSIONED_KEY_PREFIX, Coherence
from services.store.hierarchy import Hierarchy
from services.store.key_account_reads import KeyAccountReads, related_terms, related_terms_by_root
from services.store.rows import (KEYS, account_from_row, agreement_from_row, chunks, dumps, is_open,
                                 new_alert_row)

__all__ = ["StateRepository", "EVENT_STATE_TABLES", "FLUSH_ORDER", "UNVERSIONED_KEY_PREFIX", "KeyAccountCache",
           "KeyAccountState", "MasterDataCache", "add_to_counters", "account_from_row", "agreement_from_row", "dumps",
           "new_alert_row", "related_terms", "related_terms_by_root"]

# What events write; alerts (and their evidence) are written by judging, after them.
EVENT_STATE_TABLES = (t.accounts, t.team_members, t.agreements, t.promotions, t.shortages)
FLUSH_ORDER = (*EVENT_STATE_TABLES, t.alerts, t.alert_evidence)
_OPEN_ALERTS_SQL = ("SELECT " + ", ".join(c.name for c in t.alerts.c)
                    + " FROM alerts WHERE ({}) AND status <> ALL(%(closed)b::VARCHAR[])")
_BUMP_TEAMS_SQL = "UPDATE versions SET value = value + 1 WHERE name = 'teams' RETURNING value"


class StateRepository(Hierarchy, KeyAccountReads, Coherence):
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
        self._states_read: dict[str, KeyAccountState] = {}  # live: `follow_agreement`/`follow_alert_write` keep them current
        self._state_rules: frozenset[str] = frozenset()  # the alert rules the states keep
        self._written_roots: dict[str, str | None] = {}  # agreement id -> its key account when written
        self._written_by_root: dict[str | None, set[str]] = defaultdict(set)
        self._written_alerts_by_root: dict[str, set[str]] = defaultdict(set)
        self._moved_from: dict[str | None, set[str]] = defaultdict(set)  # key account -> agreements moved away
        self._accounts_built: dict[str, tuple[dict, Account]] = {}
        self._agreements_built: dict[str, tuple[dict, Agreement]] = {}
        self._agreement_roots: dict[str, str | None] = {}
        self._changes_teams = False
        # Once per transaction, the bump of the `teams` version that tells every process's master cache
        # (its new value, read after the commit, is where this process's cache starts again)
        self._teams_bump: Later | None = None
        self._teams_version_after: int | None = None
        self._rows: dict[str, dict[tuple, dict | None]] = defaultdict(dict)
        self._pending: dict[str, dict[tuple, dict]] = defaultdict(dict)
        self._teams: dict[str, Team] = {}
        self._has_children: dict[str, bool] = {}
        self._alerts_by_ref: dict[tuple[str, str | None], set[str]] = defaultdict(set)
        self._undercut: dict[str, dict[str, set[str]]] = {}  # product -> country -> roots (prefetch_undercut)
        self._promotions_by_pair: dict[tuple[str, str], dict[str, Promotion]] = {}
        self._later: list | None = None  # inside `reads_together`: what takes in each read's rows after it
        self._pipeline: contextlib.ExitStack | None = None  # ... where its pipeline goes, until a statement enters it
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
        if not wanted:
            return

        def absorb(rows) -> None:
            for mapping in rows:
                known[tuple(mapping[n] for n in names)] = mapping
            for key in wanted:
                known.setdefault(key, None)
                if shared is not None:
                    shared[key] = dict(known[key]) if known[key] is not None else None

        if self._later is not None:  # inside `reads_together`
            if len(names) != 1:  # its SQLAlchemy statement would find no rows inside the pipeline
                raise RuntimeError(f"prefetch of {table.name} (a composite key) inside reads_together")
            sql = select_by_ids_sql(table, names[0])
            for part in chunks(wanted):
                self._read(sql, {"ids": [k[0] for k in part]}, dict_row, absorb)
            return
        absorb([mapping for part in chunks(wanted) for mapping in select_by_keys(self.conn, table, names, part)])

    @contextlib.contextmanager
    def reads_together(self):
        """PostgreSQL: the prefetches of the block travel in one round trip, and what they return is
        taken in after it. Only for reads nothing in the block needs the result of; composite keys and
        SQLAlchemy statements must stay out (in a pipeline SQLAlchemy would find no result rows).

        The pipeline is entered at the block's first statement (`send_together`): a block that finds
        every row known already costs no round trip (an empty pipeline's end still waits for one).
        """
        if not self._postgres or self._later is not None:
            yield
            return
        self._shared()  # it may read the master-data version: before the pipeline, not in it
        self._later = []
        try:
            with contextlib.ExitStack() as pipeline:
                self._pipeline = pipeline
                yield
            for absorb in self._later:
                absorb()
        finally:
            self._later = self._pipeline = None

    def send_together(self) -> None:
        """Inside `reads_together`: the statements from here on travel in its round trip. Reads call it;
        a caller sending statements of its own in the block (the batch's claim) calls it first."""
        if self._pipeline is not None:
            self._pipeline.enter_context(pipelined(self.conn))
            self._pipeline = None  # entered: the rest of the block joins it

    def _read(self, sql: str, params: dict, row_factory, absorb) -> None:
        """PostgreSQL: run a read and hand its rows to `absorb`, now, or after the round trip of the
        surrounding `reads_together`."""
        if self._later is None:
            absorb(fetch_rows(self.conn, sql, params, row_factory))
            return
        self.send_together()
        later = send(self.conn, sql, params, row_factory)
        self._later.append(lambda: absorb(later.rows()))

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
        name = table.name
        names = KEYS[name]
        key = (row[names[0]],) if len(names) == 1 else tuple([row[n] for n in names])
        rows = self._rows[name]
        previous = rows.get(key)
        rows[key] = self._pending[name][key] = self._written[name][key] = row
        if table is t.alerts:
            self._alerts_by_ref[(row["rule"], row["ref_id"])].add(row["alert_id"])
            self.follow_alert_write(row)
        elif table is t.agreements:
            self.follow_agreement(previous, row)
            if row["kind"] == "price" and row["scope"] == "global" and self._undercut:
                # A promotion of this product launched later in the batch may undercut this key account.
                # Counted in every country: one it has no account in only costs a judging that finds nothing.
                root = self.root_of(row["account_id"])
                for roots in self._undercut.get(row["product_id"], {}).values():
                    roots.add(root)
        elif table is t.promotions:
            self.follow_promotion(previous, row)
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
            if self._teams_bump is None:
                self._teams_bump = send(self.conn, _BUMP_TEAMS_SQL, {}, prepare=None)
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
        self._promotions_by_pair.clear()

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
        pairs = [(rule, ref) for rule, refs in refs_by_rule.items() for ref in set(refs)]
        for part in chunks(pairs):
            by_rule = defaultdict(list)
            for rule, ref in part:
                by_rule[rule].append(ref)
            rules = sorted(by_rule)
            sql = _OPEN_ALERTS_SQL.format(" OR ".join(
                f"(rule = %(rule{i})s AND ref_id = ANY(%(refs{i})b::VARCHAR[]))" for i in range(len(rules))))
            params = {"closed": sorted(CLOSED_STATUSES)}
            for i, rule in enumerate(rules):
                params[f"rule{i}"], params[f"refs{i}"] = rule, by_rule[rule]
            self._read(sql, params, dict_row, self._remember_alerts)

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

    def stored_digests(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str | None]:
        """The content digest stored for each of these `(source, id)` pairs seen before (CONTRACT §2)."""
        found: dict[tuple[str, str], str | None] = {}
        for part in chunks(sorted(set(keys))):
            found.update(((row["source"], row["event_id"]), row["digest"])
                         for row in select_by_keys(self.conn, t.processed_events, ("source", "event_id"), part))
        return found

    def key_accounts_with_open_alerts(self, rules: Iterable[str]) -> list[str]:
        c = t.alerts.c
        return sorted(self.conn.execute(select(c.key_account_id).distinct().where(
            c.rule.in_(list(rules)), c.status.not_in(list(CLOSED_STATUSES)))).scalars())


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
        sqlite_rows(conn, "INSERT INTO counters (instance, name, value) SELECT ?, key, value FROM json_each(?) "
                          "WHERE true ON CONFLICT (instance, name) DO UPDATE SET value = value + excluded.value",
                    (instance, orjson.dumps(counts).decode()))

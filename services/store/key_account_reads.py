"""What judging reads: each key account's accounts, agreements, conflict alerts, team and the promotions
of its countries, from the process cache where its version proves it current, else in bulk.

A mixin of `StateRepository`: it works on the repository's identity map and connection.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from psycopg.rows import dict_row, namedtuple_row, tuple_row

from services.domain import CLOSED_STATUSES, Promotion, Team, TeamMember
from services.store import tables as t
from services.store.bulk import fetch_rows, pipelined, select_by_keys, send
from services.store.caches import KeyAccountCache, KeyAccountState, MasterDataCache
from services.store.rows import _account, _agreement, _promotion, chunks

if TYPE_CHECKING:
    from services.store.state import StateRepository

# The reads every batch makes, in PostgreSQL's form (SQLite runs them translated: `bulk.sqlite_form`).
_UNDERCUT_SQL = ("SELECT DISTINCT here.country, price.product_id, here.root_id FROM accounts AS here "
                 "JOIN accounts AS anywhere ON anywhere.root_id = here.root_id "
                 "JOIN agreements AS price ON price.account_id = anywhere.account_id "
                 "WHERE price.product_id = ANY(%(products)b::VARCHAR[]) AND price.kind = 'price' "
                 "AND price.scope = 'global'")
_TEAMS_SQL = ("SELECT accounts.root_id, " + ", ".join(f"team_members.{c.name}" for c in t.team_members.c)
              + " FROM team_members JOIN accounts ON accounts.account_id = team_members.account_id "
                "WHERE accounts.root_id = ANY(%(roots)b::VARCHAR[])")
_TEAMS_VERSION_SQL = "SELECT value FROM versions WHERE name = 'teams'"

_ALERT_COLUMNS = ", ".join(f"al.{c.name}" for c in t.alerts.c)
_OPEN_OR_DECIDED = ("al.rule = ANY(%(rules)b::VARCHAR[]) "
                    "AND (al.status <> ALL(%(closed)b::VARCHAR[]) OR al.closed_by_decision)")
_STATE_ACCOUNTS_SQL = ("SELECT " + ", ".join(c.name for c in t.accounts.c)
                       + " FROM accounts WHERE root_id = ANY(%(roots)b::VARCHAR[])")
_STATE_AGREEMENTS_SQL = ("SELECT a.root_id, " + ", ".join(f"g.{c.name}" for c in t.agreements.c)
                         + " FROM agreements AS g JOIN accounts AS a ON a.account_id = g.account_id"
                           " WHERE a.root_id = ANY(%(roots)b::VARCHAR[])")
# Only the agreements a change can conflict with (`KeyAccountState.related`: same product, service, global type)
_RELATED_AGREEMENTS_SQL = (_STATE_AGREEMENTS_SQL + " AND (g.agreement_id = ANY(%(ids)b::VARCHAR[])"
                           " OR g.product_id = ANY(%(products)b::VARCHAR[])"
                           " OR g.service_id = ANY(%(services)b::VARCHAR[])"
                           " OR (g.scope = 'global' AND g.contract_type = ANY(%(types)b::VARCHAR[])))")
_STATE_ALERTS_SQL = (f"SELECT {_ALERT_COLUMNS} FROM alerts AS al "
                     f"WHERE al.key_account_id = ANY(%(roots)b::VARCHAR[]) AND {_OPEN_OR_DECIDED}")
# Driven from the evidence index: a key account may have many alerts, a change touches few
_RELATED_ALERTS_SQL = (f"SELECT DISTINCT {_ALERT_COLUMNS} FROM alerts AS al "
                       "JOIN alert_evidence AS e ON e.alert_id = al.alert_id "
                       "WHERE e.evidence_id = ANY(%(ids)b::VARCHAR[]) "
                       "AND al.key_account_id = ANY(%(roots)b::VARCHAR[]) "
                       f"AND {_OPEN_OR_DECIDED}")


class KeyAccountReads:
    def prefetch_undercut(self, pairs: Iterable[tuple[str, str]]) -> None:
        """For (country, product) pairs, the roots with an account in the country and a global price for the product.

        Cached for the batch: a global price written since joins (`put`), an account written drops the cache.
        """
        known = self._undercut
        wanted = sorted({(country, product) for country, product in pairs if country not in known.get(product, ())})
        if not wanted:
            return
        self.flush(t.accounts, t.agreements)
        for country, product in wanted:
            known.setdefault(product, {})[country] = set()
        # Driven by the product index, pairs checked here: a list of (country, product) tuples becomes
        # a chain of ORs that PostgreSQL evaluates row by row after a sequential scan.

        def absorb(rows) -> None:
            for country, product_id, root_id in rows:
                if (roots := known[product_id].get(country)) is not None:
                    roots.add(root_id)

        for part in chunks(sorted({p for _, p in wanted})):
            self._read(_UNDERCUT_SQL, {"products": part}, tuple_row, absorb)

    def key_accounts_undercut_in(self, country: str, product_id: str) -> set[str]:
        """Roots a promotion in `country` for `product_id` may undercut (see `prefetch_undercut`)."""
        self.prefetch_undercut([(country, product_id)])
        return self._undercut[product_id][country]

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
                for row in fetch_rows(self.conn, _TEAMS_SQL, {"roots": part}, namedtuple_row):
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
            rows = fetch_rows(self.conn, _TEAMS_VERSION_SQL, {})
            self._master_version = rows[0][0] if rows else -1
            self._master_cache.align(self._master_version)
            self._master_cache_checked = True
        return self._master_cache

    # -- agreements and promotions --------------------------------------------------------

    def key_account_states(self, roots: Iterable[str], reread: set[str], rules: Iterable[str],
                           changed: dict[str, set[str]] | None = None) -> dict[str, KeyAccountState]:
        """The accounts, agreements and conflict alerts (of `rules`) of each key account, as of now.

        A key account read earlier in this transaction is served live: `follow_agreement` and
        `follow_alert_write` keep it current
        with every write since. One met for the first time comes from the process cache where its
        version proved it current, with this transaction's writes laid over once; the others (and
        every root in `reread`, whose accounts changed) are read in a few bulk queries and cached when
        the transaction commits. A key account met for the first time where only some agreements
        changed (`changed`: root -> their ids) is read only as far as those can conflict, and not
        kept: in a large store most key accounts are touched rarely, and reading all of their
        agreements would cost more than it saves. The caller must not change the states.
        """
        changed = changed or {}
        rules = frozenset(rules)
        self._state_rules = rules
        cache = self._key_cache
        if cache is not None and cache.rules != rules:
            cache.states.clear()
            cache.rules = rules
        states: dict[str, KeyAccountState] = {}
        caught_up: dict[str, KeyAccountState] = {}
        missing = []
        for root in sorted(set(roots)):
            if root in reread:
                missing.append(root)
            elif (live := self._states_read.get(root)) is not None:
                states[root] = live
            elif cache is not None and root in self._valid_keys and (cached := cache.take(root)) is not None:
                caught_up[root] = cached
            else:
                missing.append(root)
        first_met = [root for root in missing if root in changed and root not in reread and cache is not None
                     and not cache.met_before(root)]
        if reread.intersection(missing):  # their accounts changed: read as written (nothing to catch up on)
            self.flush(t.accounts, t.agreements, t.promotions, t.alerts, t.alert_evidence)
        full = self._read_states(sorted(set(missing) - set(first_met)), rules)
        partial = self._read_states(first_met, rules, sorted({i for root in first_met for i in changed[root]}))
        # The others were read without this transaction's unsent writes: they catch up like cached ones
        self._catch_up({**caught_up, **{root: state for fresh in (full, partial) for root, state in fresh.items()
                                        if root not in reread}})
        known = self._rows["alerts"]  # (alerts read from the store are there already: `_remember_alerts`)
        for state in caught_up.values():
            for alert_id, row in state.alerts.items():
                if known.get((alert_id,)) is None:
                    known[(alert_id,)] = row
        self._states_read.update(caught_up)
        self._states_read.update(full)
        states.update(caught_up)
        states.update(full)
        states.update(partial)
        return states

    def follow_agreement(self, previous: dict | None, row: dict) -> None:
        """Keep the states this transaction read current with an agreement it wrote (from `put`)."""
        live = self._states_read
        agreement_id = row["agreement_id"]
        root = self._known_root(row["account_id"])
        was = self._written_roots.get(agreement_id)
        if was is not None and was != root:
            self._written_by_root[was].discard(agreement_id)
        self._written_roots[agreement_id] = root
        self._written_by_root[root].add(agreement_id)
        if previous is not None and previous["account_id"] != row["account_id"]:
            before = self._known_root(previous["account_id"])
            if before != root:
                self._moved_from[before].add(agreement_id)
                if before in live:
                    live[before].drop_agreement(agreement_id)
        if root in live:
            live[root].put_agreement(self.as_agreement(row))

    def follow_alert_write(self, row: dict) -> None:
        """Keep the states this transaction read current with an alert it wrote (from `put`)."""
        root = row["key_account_id"]
        self._written_alerts_by_root[root].add(row["alert_id"])
        state = self._states_read.get(root)
        if state is not None and row["rule"] in self._state_rules:
            state.follow_alert(row)

    def _catch_up(self, states: dict[str, KeyAccountState]) -> None:
        """Lay this transaction's agreement and conflict-alert writes over states it has just taken from the
        cache or read from the store without sending its writes first.

        Those are of key accounts whose accounts this transaction did not change (those are sent and
        read as written), so an agreement's key account when it was written is its key account now.
        """
        if not states:
            return
        written = self._written.get("agreements", {})
        alerts = self._written.get("alerts", {})
        for root, state in states.items():
            for agreement_id in self._moved_from.get(root, ()):
                if self._written_roots.get(agreement_id) != root:
                    state.drop_agreement(agreement_id)
            for agreement_id in self._written_by_root.get(root, ()):
                state.put_agreement(self.as_agreement(written[(agreement_id,)]))
            for alert_id in self._written_alerts_by_root.get(root, ()):
                if (row := alerts[(alert_id,)])["rule"] in self._state_rules:
                    state.follow_alert(row)

    def _read_states(self, roots: list[str], rules: list[str],
                     related_to: list[str] | None = None) -> dict[str, KeyAccountState]:
        """Key-account states from the store: all accounts, and all agreements and conflict alerts, or
        with `related_to` (changed agreement or promotion ids) only those that can conflict with them."""
        states = {root: KeyAccountState() for root in roots}
        if not roots:
            return states
        return self._read_states_fixed(states, rules, related_to)

    def _read_states_fixed(self, states: dict[str, KeyAccountState], rules: list[str],
                           related_to: list[str] | None) -> dict[str, KeyAccountState]:
        """`_read_states` with fixed statements (no SQLAlchemy select built per call); on PostgreSQL the
        accounts, agreements and alerts of each chunk of key accounts in one round trip."""
        params: dict = {"rules": sorted(rules), "closed": sorted(CLOSED_STATUSES)}
        if related_to is not None:
            products, services, contract_types = related_terms(self.changed_rows(related_to).values())
            params.update(ids=list(related_to), products=sorted(products), services=sorted(services),
                          types=sorted(contract_types))
        for part in chunks(list(states)):
            params["roots"] = part
            with pipelined(self.conn):
                accounts = send(self.conn, _STATE_ACCOUNTS_SQL, params, dict_row)
                agreements = send(self.conn, _STATE_AGREEMENTS_SQL if related_to is None
                                  else _RELATED_AGREEMENTS_SQL, params, dict_row)
                alerts = send(self.conn, _STATE_ALERTS_SQL if related_to is None else _RELATED_ALERTS_SQL,
                              params, dict_row)
            self._take_state_rows(states, accounts.rows(), agreements.rows(), alerts.rows())
        return states

    def _take_state_rows(self, states: dict[str, KeyAccountState], accounts: Iterable[dict],
                         agreements: Iterable, alerts: Iterable) -> None:
        """Fill `states` with rows read for them: accounts (dicts), agreements with their `root_id`, alerts."""
        written = self._written.get("accounts", {})
        known = self._rows["accounts"]
        for row in accounts:
            # An account this transaction wrote is as the identity map has it (a subtree moved by SQL
            # was forgotten there, and is as read); it may not be sent yet, and belong elsewhere now.
            mapping = known.get((row["account_id"],)) if (row["account_id"],) in written else None
            if mapping is None:
                mapping = known[(row["account_id"],)] = row
            elif mapping["root_id"] != row["root_id"]:
                continue
            states[row["root_id"]].accounts[row["account_id"]] = _account(mapping)
        for row in agreements:
            states[row["root_id"]].put_agreement(_agreement(row))
        for mapping in self._remember_alerts(alerts):
            states[mapping["key_account_id"]].follow_alert(mapping)

    def _written_agreement_roots(self) -> dict[str, str | None]:
        """The key account of every agreement this transaction wrote (None if its account is unknown)."""
        written = self._written.get("agreements", {})
        self.accounts({row["account_id"] for row in written.values()})  # one query, not one per agreement
        return {row["agreement_id"]: self._known_root(row["account_id"]) for row in written.values()}

    def _lay_writes_on_cache(self, cache: KeyAccountCache, roots: dict[str, str | None]) -> None:
        """After the commit: move the agreements this transaction wrote (`roots`: id -> key account) in the
        cached states it did not read itself (those are current), and follow the conflict alerts it wrote."""
        states, index, read = cache.states, cache.agreement_root, self._states_read
        written = self._written.get("agreements", {})
        for agreement_id, root in roots.items():
            holder = index.get(agreement_id)
            if holder is not None and holder != root and holder not in read and holder in states:
                states[holder].drop_agreement(agreement_id)
            if root in states:
                if root not in read:
                    states[root].put_agreement(self.as_agreement(written[(agreement_id,)]))
                index[agreement_id] = root
            else:
                index.pop(agreement_id, None)
        for row in self._written.get("alerts", {}).values():
            root = row["key_account_id"]
            if root not in read and root in states and row["rule"] in cache.rules:
                states[root].follow_alert(row)

    def _known_root(self, account_id: str | None) -> str | None:
        """The root of a known account; None for unknown ones (their agreements belong to no key account)."""
        account = self.account(account_id)
        return account.root_id if account is not None else None

    def promotions_for(self, pairs: set[tuple[str, str]]) -> dict[tuple[str, str], list[Promotion]]:
        """The promotions of these (country, product) pairs, by id; each pair read once per transaction
        (`follow_promotion` keeps what was read current with the transaction's own launches)."""
        known = self._promotions_by_pair
        wanted = {pair for pair in pairs if pair not in known}
        if wanted:
            for pair in wanted:
                known[pair] = {}
            stored_pair: dict[str, tuple[str, str]] = {}
            # The pairs themselves, not every country with every product: three quarters of what that
            # read returned belonged to pairs nobody asked for (bench workload: 6,682 rows, 1,666 wanted).
            for part in chunks(sorted(wanted)):
                for row in select_by_keys(self.conn, t.promotions, ("country", "product_id"), part):
                    pair = (row["country"], row["product_id"])
                    known[pair][row["promotion_id"]] = _promotion_of(row)
                    stored_pair[row["promotion_id"]] = pair
            # Read without this transaction's unsent launches: lay them over
            for (promotion_id,), row in self._written.get("promotions", {}).items():
                before = stored_pair.get(promotion_id)
                if before is not None and before != (row["country"], row["product_id"]):
                    known[before].pop(promotion_id, None)
                if (pair := (row["country"], row["product_id"])) in wanted:
                    known[pair][promotion_id] = _promotion_of(row)
        return {pair: [found[i] for i in sorted(found)] for pair in pairs if (found := known[pair])}

    def follow_promotion(self, previous: dict | None, row: dict) -> None:
        """Keep the promotions read per (country, product) current with a launch (from `put`)."""
        known = self._promotions_by_pair
        if previous is not None and (old := known.get((previous["country"], previous["product_id"]))) is not None:
            old.pop(previous["promotion_id"], None)
        if (new := known.get((row["country"], row["product_id"]))) is not None:
            new[row["promotion_id"]] = _promotion_of(row)


_PROMOTION_COLUMNS = ("promotion_id", "country", "product_id", "price", "currency", "valid_from", "valid_to",
                      "audience", "launched_by")


def _promotion_of(row) -> Promotion:
    """The promotion of a stored or written row (any mapping of its columns)."""
    return _promotion(*(row[name] for name in _PROMOTION_COLUMNS))


def related_terms_by_root(repo: StateRepository,
                          changed: dict[str, set[str]]) -> dict[str, tuple[set[str], set[str], set[str], set[str]]]:
    """For key accounts where only some agreements (or promotions) changed: the changed ids and the
    products, service ids and contract types they have (`KeyAccountState.related` takes them)."""
    rows = repo.changed_rows({i for ids in changed.values() for i in ids})
    return {root: (ids, *related_terms(rows[i] for i in ids if i in rows)) for root, ids in changed.items()}


def related_terms(rows: Iterable[dict]) -> tuple[set[str], set[str], set[str]]:
    """The products, service ids and contract types of changed agreements or promotions."""
    rows = list(rows)
    return ({r["product_id"] for r in rows if r["product_id"]}, {r["service_id"] for r in rows if r.get("service_id")},
            {r["contract_type"] for r in rows if r.get("contract_type")})

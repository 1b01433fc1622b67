"""What a process keeps between transactions: master data and key-account states, valid while the
store's versions say nobody changed them (services/store/coherence.py checks that)."""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Iterable

from services.domain import CLOSED_STATUSES, Account, Agreement, Team
from services.store.rows import evidence_ids


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


class KeyAccountState:
    """Everything conflict judging reads of one key account: its accounts, agreements and conflict alerts.

    Indexed by what conflicts meet on (CONTRACT §5: a product, a service id, a global contract's
    type; an alert's evidence), so judging one change reads what it can conflict with, not every
    agreement and alert a large key account has gathered. Change it only through its methods.
    """

    __slots__ = ("accounts", "agreements", "alerts", "_by_term", "_by_evidence")

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.agreements: dict[str, Agreement] = {}
        self.alerts: dict[str, dict] = {}  # conflict alerts open or closed by a decision
        self._by_term: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._by_evidence: dict[str, set[str]] = defaultdict(set)

    def put_agreement(self, agreement: Agreement) -> None:
        self.drop_agreement(agreement.agreement_id)
        self.agreements[agreement.agreement_id] = agreement
        for term in _terms(agreement):
            self._by_term[term].add(agreement.agreement_id)

    def drop_agreement(self, agreement_id: str) -> None:
        old = self.agreements.pop(agreement_id, None)
        if old is not None:
            for term in _terms(old):
                self._by_term[term].discard(agreement_id)

    def follow_alert(self, row: dict) -> None:
        """Keep an alert while it is open or closed by a decision (judging needs those), else drop it."""
        if row["status"] not in CLOSED_STATUSES or row["closed_by_decision"]:
            self.alerts[row["alert_id"]] = row
            for evidence_id in evidence_ids(row["evidence"]):
                self._by_evidence[evidence_id].add(row["alert_id"])
        elif self.alerts.pop(row["alert_id"], None) is not None:
            for evidence_id in evidence_ids(row["evidence"]):
                self._by_evidence[evidence_id].discard(row["alert_id"])

    def related(self, ids: set[str], products: set[str], services: set[str],
                contract_types: set[str]) -> list[Agreement]:
        """The agreements among `ids`, prices of `products`, services of `services` and global contracts of
        `contract_types`: all that can conflict with changed agreements of those terms (by id)."""
        found = set(ids)
        for kind, values in (("p", products), ("s", services), ("c", contract_types)):
            for value in values:
                found.update(self._by_term.get((kind, value), ()))
        agreements = self.agreements
        return [agreements[i] for i in sorted(found) if i in agreements]

    def alerts_about(self, ids: set[str]) -> list[dict]:
        """The alerts whose evidence names any of `ids` (by id)."""
        found = set()
        for evidence_id in ids:
            found.update(self._by_evidence.get(evidence_id, ()))
        return [self.alerts[i] for i in sorted(found)]


def _terms(agreement: Agreement) -> list[tuple[str, str]]:
    terms = []
    if agreement.product_id:
        terms.append(("p", agreement.product_id))
    if agreement.service_id:
        terms.append(("s", agreement.service_id))
    if agreement.scope == "global" and agreement.contract_type:
        terms.append(("c", agreement.contract_type))
    return terms


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

    def take(self, root: str) -> KeyAccountState | None:
        """Hand a state over to a transaction, which changes it as it writes and `store`s it back when it
        commits: no copy (a transaction that fails leaves the key account to be read again)."""
        state = self.states.pop(root, None)
        if state is not None:
            self.met_before(root)  # should it not come back, the next transaction reads all of it again
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

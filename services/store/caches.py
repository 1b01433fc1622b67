"""What a process keeps between transactions: master data and key-account states, valid while the
store's versions say nobody changed them (services/store/coherence.py checks that)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from services.domain import Account, Agreement, Team


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

"""Accounts and their hierarchy (CONTRACT §4): roots, key accounts, re-rooting a moved subtree.

A mixin of `StateRepository`: it works on the repository's identity map and connection.
"""

from __future__ import annotations

from collections.abc import Iterable

from psycopg.rows import tuple_row

from services.domain import Account, Agreement
from services.store import tables as t
from services.store.bulk import fetch_rows
from services.store.rows import _account, _agreement, _built_once, chunks

# An account and its descendants get a new root; returns each one's previous root (the CTEs share a snapshot).
_REROOT_SQL = ("WITH RECURSIVE tree(account_id) AS ("
               "SELECT CAST(%(account_id)s AS VARCHAR) UNION "
               "SELECT a.account_id FROM accounts AS a JOIN tree ON a.parent_id = tree.account_id), "
               "old AS (SELECT a.account_id, a.root_id FROM accounts AS a JOIN tree USING (account_id)), "
               "changed AS (UPDATE accounts AS a SET root_id = %(root)s FROM old WHERE a.account_id = old.account_id) "
               "SELECT account_id, root_id FROM old")

_SUBTREE_ROOTS_SQL = ("WITH RECURSIVE tree(account_id) AS ("
                      "SELECT CAST(%(account_id)s AS VARCHAR) UNION "
                      "SELECT a.account_id FROM accounts AS a JOIN tree ON a.parent_id = tree.account_id) "
                      "SELECT a.account_id, a.root_id FROM accounts AS a JOIN tree USING (account_id)")
_SET_ROOT_SQL = "UPDATE accounts SET root_id = %(root)s WHERE account_id = ANY(%(ids)b::VARCHAR[])"
_PARENTS_SQL = "SELECT DISTINCT parent_id FROM accounts WHERE parent_id = ANY(%(ids)b::VARCHAR[])"


class Hierarchy:

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

    def as_agreement(self, row: dict) -> Agreement:
        """The Agreement of a row, built once per row object (judging and the handlers share it)."""
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
            def absorb(rows, part=part) -> None:
                parents = {parent for (parent,) in rows}
                self._has_children.update({i: i in parents for i in part})

            self._read(_PARENTS_SQL, {"ids": part}, tuple_row, absorb)

    def may_have_children(self, account_id: str) -> bool:
        if account_id not in self._has_children:
            self.prefetch_children([account_id])
        return self._has_children[account_id]

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
        if not self.may_have_children(account_id):
            if row["root_id"] == root:
                return {}
            self.put(t.accounts, dict(row, root_id=root))
            return {account_id: row["root_id"]}
        if self._postgres:  # the whole subtree in one statement, not a query per level and two per chunk
            self.flush(t.accounts)
            old = dict(fetch_rows(self.conn, _REROOT_SQL, {"account_id": account_id, "root": root}))
            self.forget_accounts(list(old))
            return {member: previous for member, previous in old.items() if previous != root}
        # SQLite (no UPDATE in a WITH): the subtree's roots in one statement, then one update per chunk
        self.flush(t.accounts)
        old = dict(fetch_rows(self.conn, _SUBTREE_ROOTS_SQL, {"account_id": account_id}))
        for part in chunks(list(old)):
            fetch_rows(self.conn, _SET_ROOT_SQL, {"ids": part, "root": root})
        self.forget_accounts(list(old))
        return {member: previous for member, previous in old.items() if previous != root}

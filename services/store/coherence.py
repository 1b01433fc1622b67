"""Coherence across processes: lock keys, their versions, and when a process may trust its caches.

Every writing transaction bumps the versions of the keys it locked and the store-wide `commits`
version; a process that finds a key at the version it last committed knows nobody changed it.
A mixin of `StateRepository`.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.store.bulk import fetch_rows, increment_versions, pipelined, send
from services.store.caches import KeyAccountCache
from services.store.db import lock_keys

_KEY_VERSIONS_SQL = ("SELECT key, version, false FROM key_versions WHERE key = ANY(%(keys)b::VARCHAR[]) "
                     "UNION ALL SELECT name, value, true FROM versions WHERE name IN ('teams', 'commits')")
_COMMITS_SQL = "SELECT value FROM versions WHERE name = 'commits'"
UNVERSIONED_KEY_PREFIX = "product:"  # lock keys that guard no cached state: no version to bump or check


class Coherence:

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
        if rows is None:
            rows = fetch_rows(self.conn, _KEY_VERSIONS_SQL, {"keys": keys})
        for key, version, is_master in rows:
            if is_master:
                masters[key] = version
            else:
                found[key] = version
        master = masters.get("teams", -1)
        started_at = self._commits_at_start.rows()
        self._nobody_committed = bool(started_at) and started_at[0][0] == masters.get("commits")
        # This transaction's own bump (it changed accounts or teams) is no change by anyone else: counted
        # as one, it had dropped everything read so far whenever judging locked a key account afterwards,
        # and the batch's later events were then read one row per query.
        own_bump = 1 if self._teams_bump is not None else 0
        master_unchanged = self._master_version is None or self._master_version + own_bump == master
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
        """Read what the writes returned (the new key versions, the new `teams` version if this transaction
        bumped it), now that their pipeline has ended."""
        self._bumped = dict(self._bumping.rows())
        if self._teams_bump is not None and (rows := self._teams_bump.rows()):
            self._teams_version_after = rows[0][0]

    def before_commit(self) -> None:
        """Settle, while the transaction is open, the key account of every agreement it wrote."""
        if self._key_cache is not None and self._written.get("agreements"):
            self._agreement_roots = self._written_agreement_roots()

    def after_commit(self) -> None:
        """The transaction committed: keep what it read and wrote of key accounts for the next one.

        Uses only what the transaction already knows (no query: the connection is gone); should
        anything go wrong here, the whole cache is dropped, which is always safe.
        """
        if self._master_cache is not None and self._teams_version_after is not None:
            # This transaction changed master data and held the `teams` row until its commit: the version it
            # left is the store's. Starting the master cache empty at it is what the next transaction's
            # check would do, but that check would also throw away what it had read before its locks.
            self._master_cache.align(self._teams_version_after)
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
        self._lay_writes_on_cache(cache, self._agreement_roots)


def _versioned(keys: list[str]) -> list[str]:
    return [key for key in keys if not key.startswith(UNVERSIONED_KEY_PREFIX)]

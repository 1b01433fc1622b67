"""The service layer: one database transaction per fetched batch of input messages.

Inside the transaction: claim `(source, id)` (duplicates stop here, conflicting ones become dead
letters), lock the key accounts the batch touches, apply each event in order through its
handler (services/handlers.py), judge the key accounts that changed (services/judging.py), and
write every resulting alert, instruction, notice and dead letter to the outbox. Only after it
commits does the consumer commit its Kafka offsets, so an input is either fully applied or
redelivered and recognised.

Events are applied in waves: no two events of a wave touch the same conflicts of a key account,
and a wave's key accounts are judged at its end, before any later event that touches them. So
every output is the one the events would cause one by one, wherever the batch boundaries fell.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from schemas.decode import Event, InvalidMessage
from services.batch import Batch, BatchResult, StoreWriter
from services.config import Settings
from services.domain import utcnow
from services.handlers import AGREEMENT_KINDS, HANDLERS, ORDERING_KEYS, RootsAhead
from services.inputs import InputRecord, decode_records
from services.judging import judge_key_accounts
from services.rules.agreements import CONFLICT_RULES
from services.rules.exceptions import DUNNING_RULE, STOCK_RULE
from services.rules.notices import HANDOVER_RULE
from services.store import tables as t
from services.store.bulk import bulk_insert_later
from services.store.db import insert_stmt
from services.store.errors import retryable, transient_database_error
from services.store.state import UNVERSIONED_KEY_PREFIX, KeyAccountCache, MasterDataCache, StateRepository

__all__ = ["Processor", "BatchResult"]

log = logging.getLogger("onevoice.processor")
MAX_CONSECUTIVE_REJECTS = 20


@dataclass
class _Needs:
    """What a batch's events will read, by table: gathered once, prefetched before and after the locks."""

    account_ids: set[str] = field(default_factory=set)
    team_keys: set[tuple] = field(default_factory=set)
    agreement_ids: set[str] = field(default_factory=set)
    promotion_ids: set[str] = field(default_factory=set)
    item_ids: set[str] = field(default_factory=set)
    item_keys: set[str] = field(default_factory=set)  # lock keys of stock items
    product_keys: set[str] = field(default_factory=set)  # lock keys of products with new global prices or promotions
    dunning_ids: set[str] = field(default_factory=set)
    alert_ids: set[str] = field(default_factory=set)
    promotions: list[tuple[str, str]] = field(default_factory=list)  # (country, product) of launched promotions
    upserted_accounts: set[str] = field(default_factory=set)
    exception_accounts: set[str] = field(default_factory=set)  # accounts of dunnings and short orders

    @classmethod
    def of(cls, events: list[Event]) -> _Needs:
        needs = cls()
        for event in events:
            data, kind = event.data, event.type
            fields = data.__dict__  # a model's fields; getattr of a missing one raises inside pydantic: slow
            for name in ("account_id", "parent_id"):
                if fields.get(name):
                    needs.account_ids.add(fields[name])
            if kind.startswith("team."):
                needs.team_keys.add((data.account_id, data.person_id, data.role))
            elif kind in AGREEMENT_KINDS or kind == "agreement.withdrawn":
                needs.agreement_ids.add(data.agreement_id)
                if kind == "price.agreed" and data.scope == "global":
                    needs.product_keys.add(product_key(data.product_id))
            elif kind == "promotion.launched":
                needs.promotion_ids.add(data.promotion_id)
                needs.promotions.append((data.country, data.product_id))
                needs.product_keys.add(product_key(data.product_id))
            elif kind == "stock.shortage":
                needs.item_ids.add(data.item_id)
                needs.item_keys.add(f"item:{data.item_id}")
                ordering = [o.account_id for o in data.orders]
                needs.account_ids.update(ordering)
                needs.exception_accounts.update(ordering)
            elif kind == "dunning.triggered":
                needs.dunning_ids.add(data.dunning_id)
                needs.exception_accounts.add(data.account_id)
            elif kind == "decision.made":
                needs.alert_ids.add(data.alert_id)
            elif kind == "account.upserted":
                needs.upserted_accounts.add(data.account_id)
        return needs


def product_key(product_id: str) -> str:
    """The lock a new global price and a promotion of one product both take.

    Each side reads the other under its locks (a promotion which key accounts have a global price
    for its product, a global price the promotions of its key account's countries); without a lock
    in common, two processes committing them at once would each miss the other's row, and the
    conflict would go unflagged. It guards no cached state, so it has no version (`_versioned`).
    """
    return f"{UNVERSIONED_KEY_PREFIX}{product_id}"


class Processor(StoreWriter):
    """Applies batches of input records to the store; safe to run in several processes at once."""

    def __init__(self, engine: Engine, settings: Settings, *, clock: Callable[[], datetime] = utcnow,
                 instance: str = "local"):
        super().__init__(engine, settings, clock=clock, instance=instance)
        self.consecutive_rejects = 0
        self.master_cache = MasterDataCache()
        self.key_cache = KeyAccountCache()

    def process(self, records: list[InputRecord], decoded: list[Event | InvalidMessage] | None = None) -> BatchResult:
        """Apply a batch exactly once; retried whole on deadlocks and lost races.

        `decoded` is `decode_records(records)` if the caller has done it already (the service
        decodes the next batch while this one waits on the database).

        Should a batch fail for any other reason, its records are applied one by one and the
        one that cannot be applied becomes a dead letter, so one poisoned event never stalls
        the partition behind it.
        """
        try:
            result = self._process_with_retries(records, decoded)
            self.consecutive_rejects = 0
            return result
        except Exception as exc:
            if transient_database_error(exc):
                raise
            if len(records) == 1:
                self.consecutive_rejects += 1
                if self.consecutive_rejects > MAX_CONSECUTIVE_REJECTS:
                    raise  # everything fails: a fault of ours, not poisoned input; stop rather than dead-letter it all
                log.exception("event at %s/%d@%d could not be applied", records[0].topic, records[0].partition,
                              records[0].offset)
                return self._reject(records[0])
            log.exception("batch of %d failed; applying its records one by one", len(records))
        total = BatchResult()
        for record in records:
            for name, value in self.process([record]).__dict__.items():
                setattr(total, name, getattr(total, name) + value)
        return total

    def rejudge(self, root_ids: list[str], reason: str = "onevoice/daily-review") -> int:
        """Judge key accounts again without an event (agreements expire with the calendar); returns outputs."""
        with self.engine.begin() as conn:
            batch = self._batch(StateRepository(conn))
            for root in root_ids:
                batch.touch(root, reason)
            judge_key_accounts(batch, self.settings.fallback_assignee, self._lock)
            self._write(batch)
            return batch.result.outputs

    def key_accounts_with_open_conflicts(self) -> list[str]:
        with self.engine.connect() as conn:
            return StateRepository(conn).key_accounts_with_open_alerts(CONFLICT_RULES)

    def _reject(self, record: InputRecord) -> BatchResult:
        with self.engine.begin() as conn:
            batch = self._batch(StateRepository(conn))
            conn.execute(insert_stmt(conn, t.processed_events).on_conflict_do_nothing(),
                         dict(zip(("source", "event_id"), _coordinates(record))))
            batch.dead_letter(record, "invalid_data", "the event passed validation but could not be applied; "
                                                      "see the service log at this offset")
            batch.result.processed = 1
            self._write(batch)
            return batch.result

    def _process_with_retries(self, records: list[InputRecord], decoded=None) -> BatchResult:
        if decoded is None:
            decoded = decode_records(records)
        for attempt in range(8):
            try:
                with self.engine.begin() as conn:
                    batch = self._batch(StateRepository(conn, self.master_cache, self.key_cache))
                    batch.result.retries = attempt  # deadlocks and lost races before this attempt
                    self._apply(batch, list(zip(records, decoded)))
                    self._write(batch)
                try:
                    batch.repo.after_commit()
                except Exception:  # the batch is committed: never apply it again; the cache was dropped
                    log.exception("could not keep the batch's key-account states; cache cleared")
                return batch.result
            except (IntegrityError, DBAPIError, psycopg.Error) as exc:
                if not retryable(exc) or attempt == 7:
                    raise
                log.info("batch retried after %s", type(exc.orig).__name__ if hasattr(exc, "orig") else exc)
                time.sleep(0.02 * (attempt + 1))
        raise AssertionError("unreachable")

    # -- the transaction ------------------------------------------------------------------

    def _apply(self, batch: Batch, decoded: list[tuple[InputRecord, Event | InvalidMessage]]) -> None:
        """Apply the batch's events as if one by one, judging each key account's changes before the next.

        Events that share no key account's conflicts (nor anything else one reads and another writes)
        commute, so they are applied in waves, in their order within each wave, and the key accounts a
        wave changed are judged once at its end: a handful of judging rounds per batch instead of one
        per event. The batch-split property test (tests/unit/test_batch_independence.py) holds this to
        the outputs of one event at a time.
        """
        arrived = [item for _, item in decoded if isinstance(item, Event)]
        # PostgreSQL: the reads the lock keys depend on travel with the claim, for every event of the batch
        # (a repeated one's rows are read for nothing, which costs less than a round trip of their own)
        needs = _Needs.of(arrived) if arrived and batch.repo.conn.dialect.name == "postgresql" else None
        fresh = self._claim(batch, decoded, needs)
        batch.result.duplicates = len(decoded) - len(fresh)
        batch.result.processed = len(fresh)
        events = [item for _, item in fresh if isinstance(item, Event)]
        # Nothing repeated (the usual case): the fresh events are those the claim's reads were planned for
        self._lock_touched(batch, events, needs if len(events) == len(arrived) else None)
        for record, item in fresh:
            if isinstance(item, InvalidMessage):
                batch.dead_letter(record, item.code, item.message)
        fallback = self.settings.fallback_assignee
        waves = _waves(batch.repo, [(record, item) for record, item in fresh if isinstance(item, Event)])
        for wave in waves:  # no two events of a wave share a key account's conflicts: judged once, at its end
            for record, event in wave:
                HANDLERS[event.type](batch, self.settings, record, event)
            judge_key_accounts(batch, fallback, self._lock)

    def _claim(self, batch: Batch, decoded, needs: _Needs | None):
        """Record every input as seen; return those not seen before (first occurrence in the batch wins).

        An event whose `(source, id)` was seen with other content (type, time or data) comes back as
        a `duplicate_conflict` dead letter, once: its Kafka coordinates are claimed too. With `needs`
        (PostgreSQL), what the lock keys depend on is read in the same round trip.
        """
        keys, digests = [], []
        for record, item in decoded:
            if isinstance(item, Event):
                keys.append((item.source, item.id))
                digests.append(item.digest)
            else:
                keys.append(_coordinates(record))
                digests.append(None)
        first: dict[tuple, str | None] = {}
        for key, digest in zip(keys, digests):
            first.setdefault(key, digest)
        repo = batch.repo
        if needs is not None:
            repo.optimistic_master = True  # checked under the locks (`_lock_touched`)
        with repo.reads_together():  # the transaction's first statements: one round trip
            repo.send_together()
            repo.note_commits()
            claiming = bulk_insert_later(repo.conn, t.processed_events,
                                         [{"source": s, "event_id": i, "digest": d} for (s, i), d in first.items()],
                                         conflict=("source", "event_id"), returning=("source", "event_id"))
            if needs is not None:
                _read_ahead(repo, needs)
        claimed_now = set(claiming.rows())
        claimed = set(claimed_now)
        fresh, repeated = [], []
        for key, digest, pair in zip(keys, digests, decoded):
            if key in claimed:
                claimed.discard(key)
                fresh.append(pair)
            elif digest is not None:
                repeated.append((key, digest, pair))
        if repeated:
            fresh += self._conflicting(batch, repeated, first, claimed_now)
        return fresh

    def _conflicting(self, batch: Batch, repeated: list, first: dict, claimed_now: set) -> list:
        """Among repeated events, those whose content differs from the first one's, as dead letters to write."""
        conn = batch.repo.conn
        stored = batch.repo.stored_digests({key for key, _, _ in repeated if key not in claimed_now})
        conflicts = []
        for key, digest, (record, _) in repeated:
            reference = first[key] if key in claimed_now else stored.get(key)
            if reference is not None and reference != digest:
                conflicts.append((_coordinates(record), record, key))
        if not conflicts:
            return []
        newly = set(bulk_insert_later(conn, t.processed_events, [{"source": s, "event_id": i, "digest": None}
                                                                 for (s, i), _, _ in conflicts],
                                      conflict=("source", "event_id"), returning=("source", "event_id")).rows())
        return [(record, InvalidMessage("duplicate_conflict",
                                        f"event {key[0]}/{key[1]} was received before with other content "
                                        "(type, time or data); the first one stands"))
                for coordinates, record, key in conflicts if coordinates in newly]

    def _prefetch(self, batch: Batch, needs: _Needs, *, complete: bool = True) -> set[str]:
        """Load in bulk the rows the batch's events will read; returns the lock keys they touch.

        With `complete=False` only what the lock keys depend on is read.
        """
        repo = batch.repo
        keys = needs.item_keys | needs.product_keys
        account_ids = set(needs.account_ids)
        with repo.reads_together():  # on PostgreSQL mostly read with the claim already (`_claim`)
            _read_ahead(repo, needs)
        account_ids.update(row["account_id"] for i in needs.agreement_ids
                           if (row := repo.get(t.agreements, i)) and row["account_id"])
        known = repo.accounts(account_ids)
        keys.update(a.root_id for a in known.values())
        keys.update(account_ids - set(known))
        decided = repo.alerts_key_accounts(needs.alert_ids)
        keys.update(decided.values())
        for country, product_id in needs.promotions:
            keys.update(repo.key_accounts_undercut_in(country, product_id))
        # A replaced promotion's old product too: its old (country, product) is judged again
        keys.update(product_key(row["product_id"]) for i in needs.promotion_ids if (row := repo.get(t.promotions, i)))
        if not complete:
            return keys
        repo.prefetch(t.team_members, needs.team_keys)  # a composite key: not among the reads together
        with repo.reads_together():
            repo.prefetch(t.accounts, [(a.root_id,) for a in known.values()])
            repo.prefetch(t.shortages, [(i,) for i in needs.item_ids])
            repo.prefetch_open_alerts({DUNNING_RULE: needs.dunning_ids, STOCK_RULE: needs.item_ids,
                                       HANDOVER_RULE: needs.upserted_accounts})
            repo.prefetch_children(needs.upserted_accounts)
        repo.teams({known[a].root_id for a in needs.exception_accounts if a in known} | set(decided.values()))
        return keys

    def _lock_touched(self, batch: Batch, events: list[Event], needs: _Needs | None = None) -> None:
        """Lock, in sorted order, every key account (and stock item, and product of a new global price
        or promotion: `product_key`) the batch is going to change.

        On PostgreSQL the keys come from a first read without locks. What it read is kept if no
        transaction committed since this one started, or if the keys' versions show that nobody
        changed them since this process last did; otherwise it is read again under the locks.
        """
        if not events:
            return
        needs = needs or _Needs.of(events)  # `needs`: already gathered for exactly these events
        if batch.repo.conn.dialect.name != "postgresql":  # BEGIN IMMEDIATE: nobody else writes meanwhile
            self._lock(batch, self._prefetch(batch, needs))
            return
        batch.repo.optimistic_master = True
        keys = self._prefetch(batch, needs, complete=False)
        if self._lock(batch, keys):
            batch.repo.forget_derived()
        else:
            batch.repo.forget_all()
        self._prefetch(batch, needs)

    def _lock(self, batch: Batch, keys: set[str]) -> bool:
        """Lock keys not yet locked (PostgreSQL); True if what the transaction read of them before is
        current (see `StateRepository.validate_keys`)."""
        new = set(keys) - batch.locked
        if not new:
            return True
        batch.locked.update(new)
        return batch.repo.lock_and_validate(new)

    def _write(self, batch: Batch) -> None:
        batch.commit(self.instance)


def _read_ahead(repo: StateRepository, needs: _Needs) -> None:
    """Prefetch what the lock keys depend on and no other read does (in `reads_together`: one round trip)."""
    repo.prefetch(t.agreements, [(i,) for i in needs.agreement_ids])
    repo.prefetch(t.accounts, [(i,) for i in needs.account_ids])
    repo.prefetch(t.alerts, [(i,) for i in needs.alert_ids])
    repo.prefetch_undercut(needs.promotions)
    repo.prefetch(t.promotions, [(i,) for i in needs.promotion_ids])


def _waves(repo: StateRepository, events: list[tuple[InputRecord, Event]]) -> list[list[tuple[InputRecord, Event]]]:
    """The events in waves: each after every earlier event it conflicts with on an ordering key (`ORDERING_KEYS`)."""
    last: dict[str, defaultdict[str, int]] = {}  # key name -> use -> the last wave using it so ("*": any use)
    floor = highest = 0  # an event without keys (None) stands alone: after all before it, before all after it
    waves: dict[int, list] = defaultdict(list)
    ahead = RootsAhead(repo)
    for record, event in events:
        keys = None if ahead.lost else ORDERING_KEYS[event.type](repo, ahead, event)
        if keys is None or ahead.lost:  # this event moved a subtree (or one before it did): from here on, one by one
            wave = floor = highest + 1
        else:
            wave = floor
            for name, use in keys:
                if (seen := last.get(name)) is not None:
                    wave = max(wave, _after(seen, use))
            wave += 1
            for name, use in keys:
                if (seen := last.get(name)) is None:
                    seen = last[name] = defaultdict(int)
                if seen[use] < wave:
                    seen[use] = wave
                if seen["*"] < wave:
                    seen["*"] = wave
        highest = max(highest, wave)
        waves[wave].append((record, event))
    return [waves[w] for w in sorted(waves)]


def _after(seen: defaultdict[str, int], use: str) -> int:
    """The last wave an event using a key this way must come after."""
    if use == "x":
        return seen["*"]
    if use == "r":
        return max(seen["x"], seen["w"])
    if use == "w":
        return max(seen["x"], seen["r"])
    return max(seen["x"], seen[use])  # a conflict family


def _coordinates(record: InputRecord) -> tuple[str, str]:
    """What identifies a message that is no event (a dead letter): where it lies in Kafka."""
    return f"kafka:{record.topic}:{record.partition}", str(record.offset)

"""The service layer: one database transaction per fetched batch of input messages.

Inside the transaction: decode, claim `(source, id)` (duplicates stop here), lock the key
accounts the batch touches, apply the events to the versioned state, judge the key
accounts that changed, apply decisions, and write every resulting alert, instruction and
dead letter to the outbox. Only after it commits does the consumer commit its Kafka
offsets, so an input is either fully applied or redelivered and recognised.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import psycopg
from pydantic_core import from_json  # our own JSON columns: the faster parser reads them exactly
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from schemas.decode import Event, InvalidMessage
from services.config import Settings
from services.inputs import InputRecord, decode_records
from services.outputs import (ALERTS_TOPIC, DLQ_TOPIC, INSTRUCTIONS_TOPIC, NOTICES_TOPIC, alert_message,
                              dead_letter_value, instruction_message, notice_message, output_id)
from services.rules.alerts import DUNNING_ONLY, STATUS_AFTER, refuse_decision
from services.domain import CLOSED_STATUSES, Finding, KeyAccountView, iso, utcnow
from services.rules.agreements import CONFLICT_RULES, evaluate_key_account
from services.rules.exceptions import allocate, is_shortage, judge_dunning, stock_findings
from services.store import tables as t
from services.store.bulk import bulk_insert_later, pipelined, send_commit
from services.store.db import insert_stmt
from services.store.errors import retryable, transient_database_error
from services.store.state import (EVENT_STATE_TABLES, UNVERSIONED_KEY_PREFIX, KeyAccountCache, MasterDataCache,
                                  StateRepository, add_to_counters, dumps, new_alert_row, related_agreements)

log = logging.getLogger("onevoice.processor")
AGREEMENT_KINDS = {"price.agreed": "price", "contract.negotiated": "contract", "service.agreed": "service"}
AGREEMENT_FIELDS = ("agreement_id", "version", "account_id", "agreed_by", "scope", "country", "product_id", "currency",
                    "contract_type", "status", "service_id", "charge")
DUE_SEVERITIES = frozenset({"high", "critical"})
MAX_CONSECUTIVE_REJECTS = 20


@dataclass
class BatchResult:
    """What a batch did: counters for the ops stream, and the outputs it committed to the outbox."""

    processed: int = 0
    duplicates: int = 0
    stale: int = 0
    dead_letters: int = 0
    unknown_accounts: int = 0
    outputs: int = 0
    committed_outputs: list[tuple] = field(default_factory=list)  # (outbox id, topic, key, value) in id order

    def counters(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if k not in ("outputs", "committed_outputs")}


@dataclass
class _Batch:
    """What one transaction has done so far: outputs to write and key accounts to judge."""

    repo: StateRepository
    now: datetime
    result: BatchResult = field(default_factory=BatchResult)
    outbox: list[dict] = field(default_factory=list)
    dirty: dict[str, str] = field(default_factory=dict)  # key account -> caused_by
    changed: dict[str, set[str]] = field(default_factory=dict)  # key account -> agreements changed, if only those
    whole: set[str] = field(default_factory=set)  # key accounts to judge whole (team, hierarchy, promotion)
    locked: set[str] = field(default_factory=set)
    history: list[dict] = field(default_factory=list)  # alert status changes
    decision_outcomes: list[dict] = field(default_factory=list)
    notices: list[dict] = field(default_factory=list)
    now_iso: str = field(init=False)  # every output carries it: formatted once

    def __post_init__(self) -> None:
        self.now_iso = iso(self.now)

    def touch(self, root_id: str | None, caused_by: str) -> None:
        """The key account changed as a whole: judge all of it."""
        if root_id is not None:
            self.dirty[root_id] = caused_by
            self.whole.add(root_id)

    def touch_agreement(self, root_id: str | None, caused_by: str, agreement_id: str) -> None:
        """Only this agreement (or promotion) changed: judge the conflicts it can take part in."""
        if root_id is not None:
            self.dirty[root_id] = caused_by
            self.changed.setdefault(root_id, set()).add(agreement_id)

    def record_history(self, row: dict, *, decided_by: str | None = None, comment: str | None = None) -> None:
        self.history.append({"alert_id": row["alert_id"], "status": row["status"], "assignee": row["assignee"],
                             "caused_by": row["caused_by"], "decided_by": decided_by, "comment": comment,
                             "at": self.now_iso})

    def emit(self, topic: str, key: str | None, value: dict) -> None:
        self.outbox.append({"topic": topic, "key": key, "value": dumps(value), "created_at": self.now_iso})


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


class Processor:
    """Applies batches of input records to the store; safe to run in several processes at once."""

    def __init__(self, engine: Engine, settings: Settings, *, clock: Callable[[], datetime] = utcnow,
                 instance: str = "local"):
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.instance = instance
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
            batch = _Batch(StateRepository(conn), self.clock())
            for root in root_ids:
                batch.touch(root, reason)
            self._judge_key_accounts(batch)
            self._write(batch)
            return batch.result.outputs

    def key_accounts_with_open_conflicts(self) -> list[str]:
        with self.engine.connect() as conn:
            return StateRepository(conn).key_accounts_with_open_alerts(CONFLICT_RULES)

    def _reject(self, record: InputRecord) -> BatchResult:
        with self.engine.begin() as conn:
            batch = _Batch(StateRepository(conn), self.clock())
            conn.execute(insert_stmt(conn, t.processed_events).on_conflict_do_nothing(),
                         {"source": f"kafka:{record.topic}:{record.partition}", "event_id": str(record.offset)})
            self._dead_letter(batch, record, "invalid_data", "the event passed validation but could not be applied; "
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
                    batch = _Batch(StateRepository(conn, self.master_cache, self.key_cache), self.clock())
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

    def _apply(self, batch: _Batch, decoded: list[tuple[InputRecord, Event | InvalidMessage]]) -> None:
        fresh = self._claim(batch, decoded)
        batch.result.duplicates = len(decoded) - len(fresh)
        batch.result.processed = len(fresh)
        self._lock_touched(batch, [item for _, item in fresh if isinstance(item, Event)])
        decisions = []
        for record, item in fresh:
            if isinstance(item, InvalidMessage):
                self._dead_letter(batch, record, item.code, item.message)
            elif item.type == "decision.made":
                decisions.append((record, item))
            else:
                self._apply_event(batch, record, item)
        self._judge_key_accounts(batch)
        for record, event in decisions:
            self._decide(batch, record, event)

    def _claim(self, batch: _Batch, decoded):
        """Record every input as seen; return those not seen before (first occurrence in the batch wins)."""
        keys = []
        for record, item in decoded:
            if isinstance(item, Event):
                keys.append((item.source, item.id))
            else:
                keys.append((f"kafka:{record.topic}:{record.partition}", str(record.offset)))
        unique = list(dict.fromkeys(keys))
        with pipelined(batch.repo.conn):  # the transaction's first statements: one round trip
            batch.repo.note_commits()
            claiming = bulk_insert_later(batch.repo.conn, t.processed_events,
                                         [{"source": s, "event_id": i} for s, i in unique],
                                         conflict=("source", "event_id"), returning=("source", "event_id"))
        claimed = set(claiming.rows())
        fresh = []
        for key, pair in zip(keys, decoded):
            if key in claimed:
                claimed.discard(key)
                fresh.append(pair)
        return fresh

    def _prefetch(self, batch: _Batch, needs: _Needs, *, complete: bool = True) -> set[str]:
        """Load in bulk the rows the batch's events will read; returns the lock keys they touch.

        With `complete=False` only what the lock keys depend on is read.
        """
        repo = batch.repo
        keys = needs.item_keys | needs.product_keys
        account_ids = set(needs.account_ids)
        repo.prefetch(t.agreements, [(i,) for i in needs.agreement_ids])
        account_ids.update(row["account_id"] for i in needs.agreement_ids
                           if (row := repo.get(t.agreements, i)) and row["account_id"])
        known = repo.accounts(account_ids)
        keys.update(a.root_id for a in known.values())
        keys.update(account_ids - set(known))
        decided = repo.alerts_key_accounts(needs.alert_ids)  # prefetches the decided alerts
        keys.update(decided.values())
        repo.prefetch_undercut(needs.promotions)
        for country, product_id in needs.promotions:
            keys.update(repo.key_accounts_undercut_in(country, product_id))
        # A replaced promotion's old product too: its old (country, product) is judged again
        repo.prefetch(t.promotions, [(i,) for i in needs.promotion_ids])
        keys.update(product_key(row["product_id"]) for i in needs.promotion_ids if (row := repo.get(t.promotions, i)))
        if not complete:
            return keys
        repo.accounts({a.root_id for a in known.values()})
        repo.prefetch(t.team_members, needs.team_keys)
        repo.prefetch(t.shortages, [(i,) for i in needs.item_ids])
        repo.prefetch_open_alerts({"key_account_dunning": needs.dunning_ids, "scarce_stock_allocation": needs.item_ids})
        repo.prefetch_children(needs.upserted_accounts)
        repo.teams({known[a].root_id for a in needs.exception_accounts if a in known} | set(decided.values()))
        return keys

    def _lock_touched(self, batch: _Batch, events: list[Event]) -> None:
        """Lock, in sorted order, every key account (and stock item, and product of a new global price
        or promotion: `product_key`) the batch is going to change.

        On PostgreSQL the keys come from a first read without locks. What it read is kept if no
        transaction committed since this one started, or if the keys' versions show that nobody
        changed them since this process last did; otherwise it is read again under the locks.
        """
        if not events:
            return
        needs = _Needs.of(events)
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

    def _lock(self, batch: _Batch, keys: set[str]) -> bool:
        """Lock keys not yet locked (PostgreSQL); True if what the transaction read of them before is
        current (see `StateRepository.validate_keys`)."""
        new = set(keys) - batch.locked
        if not new:
            return True
        batch.locked.update(new)
        return batch.repo.lock_and_validate(new)

    def _write(self, batch: _Batch) -> None:
        """Write what the batch changed and commit: nothing may follow in the transaction.

        On PostgreSQL the writes and the COMMIT travel together, and what they return (outbox
        ids, key versions) is read after: one round trip, not a dozen.
        """
        conn = batch.repo.conn
        batch.repo.before_commit()
        with pipelined(conn):
            batch.repo.flush()
            add_to_counters(conn, self.instance, batch.result.counters())
            outbox_ids = bulk_insert_later(conn, t.outbox, batch.outbox, returning=("id",))
            for table, rows, key in ((t.alert_history, batch.history, None), (t.notices, batch.notices, "notice_id"),
                                     (t.decision_outcomes, batch.decision_outcomes, None)):
                if rows:
                    bulk_insert_later(conn, table, rows, conflict=(key,) if key else None)
            batch.repo.bump_keys(batch.locked)  # last: it updates the one `commits` row every writer updates
            send_commit(conn)
        batch.repo.read_returned()
        ids = sorted(i for (i,) in outbox_ids.rows())
        batch.result.committed_outputs = [(i, row["topic"], row["key"], row["value"]) for i, row in zip(ids, batch.outbox)]
        batch.result.outputs = len(batch.outbox)

    # -- events ---------------------------------------------------------------------------

    def _apply_event(self, batch: _Batch, record: InputRecord, event: Event) -> None:
        handler = getattr(self, "_on_" + event.type.replace(".", "_"))
        handler(batch, record, event)

    def _on_account_upserted(self, batch: _Batch, record: InputRecord, event: Event) -> None:
        repo, data = batch.repo, event.data
        stamp = _stamp(event)
        current = repo.get(t.accounts, data.account_id)
        if _not_newer(stamp, current):
            batch.result.stale += 1
            return
        if data.parent_id is not None and repo.ancestors_reach(data.parent_id, data.account_id):
            self._dead_letter(batch, record, "invalid_data",
                              f"parent_id {data.parent_id!r} would make {data.account_id!r} its own ancestor")
            return
        repo.put(t.accounts, dict(account_id=data.account_id, name=data.name, parent_id=data.parent_id,
                                  country=data.country, tier=data.tier,
                                  root_id=current["root_id"] if current else data.account_id,
                                  event_time=stamp[0], event_id=stamp[1]))
        unchanged_parent = current is not None and current["parent_id"] == data.parent_id
        old_roots = {} if unchanged_parent else repo.reroot(data.account_id)
        for root in {current["root_id"] if current else None, *old_roots.values(), repo.root_of(data.account_id)}:
            batch.touch(root, _ref(event))

    def _on_team_member_assigned(self, batch: _Batch, record: InputRecord, event: Event, present: bool = True) -> None:
        repo, data = batch.repo, event.data
        stamp = _stamp(event)
        current = repo.get(t.team_members, data.account_id, data.person_id, data.role)
        if _not_newer(stamp, current):
            batch.result.stale += 1
            return
        if repo.account(data.account_id) is None:
            batch.result.unknown_accounts += 1
        repo.put(t.team_members, dict(account_id=data.account_id, person_id=data.person_id, role=data.role,
                                      country=data.country, name=data.name, email=data.email, present=present,
                                      event_time=stamp[0], event_id=stamp[1]))
        batch.touch(repo.root_of(data.account_id), _ref(event))

    def _on_team_member_removed(self, batch: _Batch, record: InputRecord, event: Event) -> None:
        self._on_team_member_assigned(batch, record, event, present=False)

    def _on_price_agreed(self, batch: _Batch, record: InputRecord, event: Event) -> None:
        repo, data = batch.repo, event.data
        previous = repo.get(t.agreements, data.agreement_id)
        if previous is not None and previous["version"] >= data.version:
            batch.result.stale += 1
            return
        fields = data.__dict__  # the model's fields; those another agreement type lacks are None
        values = {name: fields.get(name) for name in AGREEMENT_FIELDS}
        values.update(kind=AGREEMENT_KINDS[event.type], valid_from=_day(data.valid_from),
                      valid_to=_day(fields.get("valid_to")),
                      price=None if fields.get("price") is None else str(data.price))
        repo.put(t.agreements, values)
        if repo.account(data.account_id) is None:
            batch.result.unknown_accounts += 1
        batch.touch_agreement(repo.root_of(data.account_id), _ref(event), data.agreement_id)
        if previous is not None:
            batch.touch_agreement(repo.root_of(previous["account_id"]), _ref(event), data.agreement_id)

    _on_contract_negotiated = _on_price_agreed
    _on_service_agreed = _on_price_agreed

    def _on_agreement_withdrawn(self, batch: _Batch, record: InputRecord, event: Event) -> None:
        repo, data = batch.repo, event.data
        previous = repo.get(t.agreements, data.agreement_id)
        if previous is not None and previous["version"] >= data.version:
            batch.result.stale += 1
            return
        values = dict(previous) if previous is not None else {
            name: None for name in (*AGREEMENT_FIELDS, "valid_from", "valid_to", "price")}
        values.update(agreement_id=data.agreement_id, version=data.version, kind="withdrawal")
        repo.put(t.agreements, values)
        if previous is not None:
            batch.touch_agreement(repo.root_of(previous["account_id"]), _ref(event), data.agreement_id)

    def _on_promotion_launched(self, batch: _Batch, record: InputRecord, event: Event) -> None:
        repo, data = batch.repo, event.data
        stamp = _stamp(event)
        old = repo.get(t.promotions, data.promotion_id)
        if _not_newer(stamp, old):
            batch.result.stale += 1
            return
        repo.put(t.promotions, dict(
            promotion_id=data.promotion_id, country=data.country, product_id=data.product_id, price=str(data.price),
            currency=data.currency, valid_from=_day(data.valid_from), valid_to=_day(data.valid_to),
            audience=data.audience, launched_by=data.launched_by, event_time=stamp[0], event_id=stamp[1]))
        for country, product in {(data.country, data.product_id), *([(old["country"], old["product_id"])] if old else [])}:
            for root in repo.key_accounts_undercut_in(country, product):
                batch.touch_agreement(root, _ref(event), data.promotion_id)

    def _on_dunning_triggered(self, batch: _Batch, record: InputRecord, event: Event) -> None:
        repo, data = batch.repo, event.data
        account = repo.account(data.account_id)
        if account is None:
            batch.result.unknown_accounts += 1
        key_account = repo.key_account_of(data.account_id)
        team = repo.teams([key_account.account_id])[key_account.account_id] if key_account else None
        outcome = judge_dunning(data, account, key_account, team, self.settings.fallback_assignee)
        alert_id = None
        if outcome.finding is not None:
            alert_id = self._open_alert(batch, outcome.finding, _ref(event), ref_id=data.dunning_id,
                                        awaiting_decision=outcome.action == "hold")
        self._instruct(batch, kind="dunning", ref_id=data.dunning_id, action=outcome.action,
                       account_id=data.account_id, key_account_id=key_account and key_account.account_id,
                       reason=outcome.reason, alert_id=alert_id, caused_by=_ref(event), allocation=[])

    def _on_stock_shortage(self, batch: _Batch, record: InputRecord, event: Event) -> None:
        repo, data = batch.repo, event.data
        if not is_shortage(data):
            return
        key_account_of_order = {}
        for order in data.orders:
            key_account = repo.key_account_of(order.account_id)
            if key_account is not None:
                key_account_of_order[order.order_id] = key_account
        tiers = {order_id: ka.tier for order_id, ka in key_account_of_order.items()}
        allocation = allocate(data.orders, data.available_qty, tiers)
        self._instruct(batch, kind="allocation", ref_id=data.item_id, action="allocate", account_id=None,
                       key_account_id=None, allocation=[{"order_id": o, "qty": q} for o, q in allocation],
                       reason=f"{data.available_qty} available for {sum(o.qty for o in data.orders)} ordered; "
                              f"ranked by key-account tier, then order time", caused_by=_ref(event))
        stamp = _stamp(event)
        current = repo.get(t.shortages, data.item_id)
        if _not_newer(stamp, current):
            batch.result.stale += 1
            return
        repo.put(t.shortages, dict(item_id=data.item_id, event_time=stamp[0], event_id=stamp[1]))
        for old in repo.open_alerts_for("scarce_stock_allocation", data.item_id):
            self._change_status(batch, old, "resolved", _ref(event))
        teams = repo.teams({ka.account_id for ka in key_account_of_order.values()})
        for finding in stock_findings(data, allocation, key_account_of_order, teams, self.settings.fallback_assignee):
            self._open_alert(batch, finding, _ref(event), ref_id=data.item_id)

    # -- conflicts ------------------------------------------------------------------------

    def _judge_key_accounts(self, batch: _Batch) -> None:
        """Re-evaluate every key account the batch changed and reconcile its conflict alerts.

        A key account changed as a whole (team, hierarchy) is judged whole; one where only some
        agreements or promotions changed is judged on the conflicts those can take part in.
        """
        if not batch.dirty:
            return
        repo = batch.repo
        if not self._lock(batch, set(batch.dirty)) and repo.conn.dialect.name == "postgresql":
            repo.forget_all()
        roots = sorted(batch.dirty)
        partial = {root: ids for root, ids in batch.changed.items() if root not in batch.whole}
        related = related_agreements(repo, partial)
        states = repo.key_account_states(roots, batch.whole, CONFLICT_RULES, partial)
        teams = repo.teams(roots)
        agreements_by_root = {}
        pairs = set()
        for root in roots:
            state = states[root]
            agreements = list(state.agreements.values())
            if root in partial:
                agreements = related(root, agreements)
            agreements_by_root[root] = agreements
            products = {a.product_id for a in agreements if a.kind == "price" and a.scope == "global"}
            pairs.update((a.country, p) for a in state.accounts.values() for p in products)
        promotions_by_country = defaultdict(list)
        for (country, _), found in (repo.promotions_for(pairs) if pairs else {}).items():
            promotions_by_country[country].extend(found)
        today = batch.now.date()
        # Nothing below reads the store: the events' state writes are sent now and PostgreSQL applies
        # them while the key accounts are judged, instead of in the final round trip after it.
        with pipelined(repo.conn) if repo.has_pending(*EVENT_STATE_TABLES) else contextlib.nullcontext():
            repo.flush(*EVENT_STATE_TABLES)
            for root in roots:
                members = states[root].accounts
                findings: list[Finding] = []
                key_account = members.get(root)
                if key_account is not None and key_account.tier != "none":
                    countries = sorted({a.country for a in members.values()})
                    promotions = tuple(p for country in countries for p in promotions_by_country.get(country, ()))
                    view = KeyAccountView(key_account, members, teams[root], tuple(agreements_by_root[root]),
                                          promotions)
                    findings = evaluate_key_account(view, today, self.settings.fallback_assignee)
                alerts = list(states[root].alerts.values())
                if root in partial:
                    ids = partial[root]
                    findings = [f for f in findings if ids.intersection(f.evidence)]
                    alerts = [a for a in alerts if not ids.isdisjoint(evidence_ids(a["evidence"]))]
                self._reconcile(batch, alerts, findings, batch.dirty[root])

    def _reconcile(self, batch: _Batch, existing, findings: list[Finding], caused_by: str) -> None:
        open_by_fingerprint = {a["fingerprint"]: a for a in existing if a["status"] not in CLOSED_STATUSES}
        decided = {(a["fingerprint"], a["versions"]) for a in existing if a["closed_by_decision"]}
        holding = set()
        for finding in findings:
            holding.add(finding.fingerprint)
            current = open_by_fingerprint.get(finding.fingerprint)
            if current is not None:
                if current["versions"] != finding.versions:
                    self._refresh_alert(batch, current, finding)
                continue
            if (finding.fingerprint, finding.versions) not in decided:
                self._open_alert(batch, finding, caused_by)
        for fingerprint, alert in open_by_fingerprint.items():
            if fingerprint not in holding:
                self._change_status(batch, alert, "resolved", caused_by)

    # -- decisions ------------------------------------------------------------------------

    def _decide(self, batch: _Batch, record: InputRecord, event: Event) -> None:
        repo, data = batch.repo, event.data
        alert = repo.alert(data.alert_id)
        if alert is None:
            return self._refuse(batch, record, event, "unknown_alert", f"no alert {data.alert_id!r}")
        team = repo.teams([alert["key_account_id"]])[alert["key_account_id"]]
        refusal = refuse_decision(data.decision, data.decided_by, rule=alert["rule"], status=alert["status"],
                                  key_account_id=alert["key_account_id"], team=team)
        if refusal is not None:
            return self._refuse(batch, record, event, refusal.code, refusal.message)
        status = STATUS_AFTER[data.decision]
        extra = {"closed_by_decision": status in CLOSED_STATUSES}
        if data.decision in DUNNING_ONLY:
            extra["awaiting_decision"] = False
            extra["data"] = dumps(dict(from_json(alert["data"]), instruction=data.decision,
                                       decided_by=data.decided_by, comment=data.comment))
        self._change_status(batch, alert, status, _ref(event), decided_by=data.decided_by, comment=data.comment,
                            **extra)
        self._record_outcome(batch, event, alert["alert_id"], "applied")
        if data.decision in DUNNING_ONLY:
            self._instruct(batch, kind="dunning", ref_id=alert["ref_id"], action=data.decision,
                           account_id=alert["account_id"], key_account_id=alert["key_account_id"],
                           reason=f"decided by {data.decided_by}" + (f": {data.comment}" if data.comment else ""),
                           alert_id=alert["alert_id"], decided_by=data.decided_by, caused_by=_ref(event),
                           allocation=[])

    def _refuse(self, batch: _Batch, record: InputRecord, event: Event, code: str, message: str) -> None:
        self._dead_letter(batch, record, code, message)
        self._record_outcome(batch, event, event.data.alert_id, "rejected", code, message)

    def _record_outcome(self, batch: _Batch, event: Event, alert_id: str, status: str, code: str | None = None,
                        message: str | None = None) -> None:
        """What became of a decision, for whoever made it (the inbox polls it by event id)."""
        batch.decision_outcomes.append({"source": event.source, "event_id": event.id, "alert_id": alert_id,
                                        "decision": event.data.decision, "decided_by": event.data.decided_by,
                                        "status": status, "code": code, "message": message, "at": batch.now_iso})

    # -- outputs --------------------------------------------------------------------------

    def _open_alert(self, batch: _Batch, finding: Finding, caused_by: str, *, ref_id: str | None = None,
                    awaiting_decision: bool = False) -> str | None:
        if ref_id is not None and any(a["fingerprint"] == finding.fingerprint
                                      for a in batch.repo.open_alerts_for(finding.rule, ref_id)):
            return None  # one open alert per fingerprint: a repeated dunning or shortage adds none
        alert_id = output_id(f"{finding.fingerprint}#{caused_by}")
        due = None
        if finding.severity in DUE_SEVERITIES:
            due = iso(batch.now + timedelta(seconds=self.settings.decision_window_s))
        row = new_alert_row(
            alert_id=alert_id, fingerprint=finding.fingerprint, rule=finding.rule, severity=finding.severity,
            status="open", key_account_id=finding.key_account_id, account_id=finding.account_id, title=finding.title,
            detail=finding.detail, evidence=dumps(list(finding.evidence)), assignee=finding.assignee,
            recipients=dumps(list(finding.recipients)), due_at=due, caused_by=caused_by, created_at=batch.now_iso,
            updated_at=batch.now_iso, data=dumps(finding.data), versions=finding.versions,
            awaiting_decision=awaiting_decision, ref_id=ref_id)
        batch.repo.put(t.alerts, row)
        for evidence_id in finding.evidence:
            batch.repo.put(t.alert_evidence, {"alert_id": alert_id, "evidence_id": evidence_id})
        batch.record_history(row)
        batch.emit(ALERTS_TOPIC, finding.assignee, alert_message(row, evidence=list(finding.evidence),
                                                                  recipients=list(finding.recipients),
                                                                  data=finding.data))
        return alert_id

    def _refresh_alert(self, batch: _Batch, alert, finding: Finding) -> None:
        """A new version of an agreement changed an open conflict: keep the alert, update its facts.

        No message is published (kam.alerts carries status changes), but severity and due date now
        follow the current versions, so the outcome does not depend on the order versions arrived in.
        """
        due = alert["due_at"]
        if finding.severity not in DUE_SEVERITIES:
            due = None
        elif due is None:
            due = iso(batch.now + timedelta(seconds=self.settings.decision_window_s))
        batch.repo.put(t.alerts, dict(alert, severity=finding.severity, title=finding.title, detail=finding.detail,
                                      data=dumps(finding.data), versions=finding.versions, due_at=due,
                                      updated_at=batch.now_iso))

    def _change_status(self, batch: _Batch, alert, status: str, caused_by: str, *, decided_by: str | None = None,
                       comment: str | None = None, **extra) -> None:
        row = dict(alert, status=status, updated_at=batch.now_iso, caused_by=caused_by, **extra)
        batch.repo.put(t.alerts, row)
        batch.record_history(row, decided_by=decided_by, comment=comment)
        batch.emit(ALERTS_TOPIC, row["assignee"], alert_message(row))

    def _instruct(self, batch: _Batch, **fields) -> None:
        message = instruction_message(created_at=batch.now_iso, **fields)
        batch.emit(INSTRUCTIONS_TOPIC, message["ref_id"], message)

    def _notify(self, batch: _Batch, **fields) -> None:
        message = notice_message(created_at=batch.now_iso, **fields)
        batch.notices.append(dict(message, recipients=dumps(message["recipients"])))
        batch.emit(NOTICES_TOPIC, message["key_account_id"], message)

    def _dead_letter(self, batch: _Batch, record: InputRecord, code: str, message: str) -> None:
        batch.result.dead_letters += 1
        letter = dead_letter_value(topic=record.topic, partition=record.partition, offset=record.offset,
                                   key=record.key, value=record.value, code=code, message=message,
                                   received_at=batch.now_iso)
        key = letter["key"]
        # PostgreSQL text cannot hold NUL: the message key (not the letter's `key` field) gets U+FFFD instead.
        batch.emit(DLQ_TOPIC, key.replace("\x00", "\ufffd") if key else key, letter)


@functools.lru_cache(maxsize=65536)
def evidence_ids(evidence: str) -> frozenset[str]:
    """The ids in an alert's stored evidence (a JSON list); parsed once per distinct text."""
    return frozenset(json.loads(evidence))


def _stamp(event: Event) -> tuple[str, str]:
    """Last-writer-wins order of master data: event time, then event id."""
    return iso(event.time), event.id


def _not_newer(stamp: tuple[str, str], stored: dict | None) -> bool:
    """Whether an event stamped `stamp` is stale against the stored row (older or the same)."""
    return stored is not None and (stored["event_time"], stored["event_id"]) >= stamp


def _ref(event: Event) -> str:
    return f"{event.source}/{event.id}"


def _day(value) -> str | None:
    return value.isoformat() if value is not None else None

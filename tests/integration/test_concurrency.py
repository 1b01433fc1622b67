"""Correct under concurrency (DESIGN.md, CONTRACT §1/§5): several processors and timers on one
PostgreSQL database behave exactly like one.

Each processor / timer has its own engine (its own connections), as separate `onevoice run`
processes would; a `threading.Barrier` releases both at the same instant.
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, func, select

from services.config import Settings
from services.inputs import InputRecord
from services.processor import Processor
from services.store import tables as t
from services.store.db import create_tables, make_engine
from services.timers import EscalationTimer

pytestmark = pytest.mark.postgres

ROUNDS = 50
T0 = datetime(2027, 1, 15, 9, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self, now: datetime = T0):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def event(etype: str, data: dict, *, eid: str | None = None, source: str = "test/concurrency") -> dict:
    return {"specversion": "1.0", "id": eid or uuid.uuid4().hex, "source": source, "type": etype,
            "time": "2027-01-10T09:00:00Z", "data": data}


_offsets: dict[str, int] = {}


def record(topic: str, value: dict) -> InputRecord:
    offset = _offsets.get(topic, 0)
    _offsets[topic] = offset + 1
    return InputRecord(topic, 0, offset, None, json.dumps(value).encode())


def key_account_setup(ka: str) -> list[InputRecord]:
    """A strategic key account `ka` with an Italian subsidiary and a team."""
    events = [
        event("account.upserted", {"account_id": ka, "name": ka, "parent_id": None, "country": "DE",
                                   "tier": "strategic"}),
        event("account.upserted", {"account_id": f"{ka}-IT", "name": f"{ka} Italia", "parent_id": ka,
                                   "country": "IT", "tier": "none"}),
    ]
    for person, role, country in (("gk", "global_kam", None), ("sen", "senior_kam", None),
                                  ("es", "executive_sponsor", None), ("lk-it", "local_kam", "IT"),
                                  ("fin", "finance", None)):
        events.append(event("team.member_assigned", {"account_id": ka, "person_id": person, "role": role,
                                                     "country": country}))
    return [record("crm.accounts", e) for e in events]


def global_contract(ka: str, agreement_id: str) -> InputRecord:
    return record("erp.agreements", event("contract.negotiated", {
        "agreement_id": agreement_id, "version": 1, "account_id": ka, "scope": "global", "country": None,
        "contract_type": "framework", "status": "signed", "valid_from": "2027-01-01", "valid_to": None,
        "agreed_by": "gk", "region": None}))


def price(ka: str, agreement_id: str, scope: str, amount: str) -> InputRecord:
    local = scope == "local"
    return record("erp.agreements", event("price.agreed", {
        "agreement_id": agreement_id, "version": 1, "account_id": f"{ka}-IT" if local else ka, "scope": scope,
        "country": "IT" if local else None, "product_id": "P1", "price": amount, "currency": "EUR",
        "valid_from": "2027-01-01", "valid_to": "2027-12-31", "agreed_by": "lk-it" if local else "gk"}))


def dunning(ka: str, dunning_id: str, action: str = "collection") -> dict:
    return event("dunning.triggered", {
        "dunning_id": dunning_id, "account_id": f"{ka}-IT", "invoice_id": f"INV-{dunning_id}", "level": 3,
        "amount": "1500.00", "currency": "EUR", "due_date": "2027-01-01", "proposed_action": action})


def in_parallel(*calls: Callable[[], object]) -> list[object]:
    """Run the calls in threads released by one barrier; re-raise the first failure."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int, call: Callable[[], object]) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a worker hung"
    if errors:
        raise errors[0]
    return results


def open_alerts(engine: Engine, fingerprint: str) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(t.alerts).where(
            t.alerts.c.fingerprint == fingerprint, t.alerts.c.status.not_in(["resolved", "waived"]))).scalar_one()


def alert_messages(engine: Engine, needle: str) -> list[dict]:
    """kam.alerts outbox messages whose fingerprint or alert id is `needle`."""
    with engine.connect() as conn:
        rows = conn.execute(select(t.outbox.c.value).where(t.outbox.c.topic == "kam.alerts",
                                                           t.outbox.c.value.contains(needle))
                            .order_by(t.outbox.c.id)).all()
    messages = [json.loads(r.value) for r in rows]
    return [m for m in messages if needle in (m["fingerprint"], m["alert_id"])]


def instructions(engine: Engine, ref_id: str) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(select(t.outbox.c.value).where(t.outbox.c.topic == "kam.instructions",
                                                           t.outbox.c.key == ref_id).order_by(t.outbox.c.id)).all()
    return [json.loads(r.value) for r in rows]


@pytest.fixture
def two_processors(postgres_database):
    """Two processors, as two `onevoice run` processes would be: own engines, own instance names."""
    settings = Settings(database_url=postgres_database)
    engines = [make_engine(postgres_database) for _ in range(2)]
    create_tables(engines[0])
    clock = Clock()
    processors = [Processor(engine, settings, clock=clock, instance=f"worker-{i}")
                  for i, engine in enumerate(engines)]
    yield processors
    for engine in engines:
        engine.dispose()


# -- two contradicting events of one key account at the same instant ------------------------------

@pytest.mark.parametrize("variant", ["duplicate_global_contract", "local_price_below_global"])
def test_contradicting_events_in_parallel_raise_exactly_one_alert(two_processors, variant):
    first, second = two_processors
    for round_no in range(ROUNDS):
        ka = f"KA{round_no}-{uuid.uuid4().hex[:6]}"
        first.process(key_account_setup(ka))
        if variant == "duplicate_global_contract":
            a, b = global_contract(ka, f"{ka}-C1"), global_contract(ka, f"{ka}-C2")
            fingerprint = f"duplicate_global_contract:{ka}:{ka}-C1|{ka}-C2"
        else:
            a, b = price(ka, f"{ka}-G", "global", "100.00"), price(ka, f"{ka}-L", "local", "90.00")
            fingerprint = f"local_price_below_global:{ka}:{ka}-G|{ka}-L"
        results = in_parallel(lambda: first.process([a]), lambda: second.process([b]))
        assert [r.processed for r in results] == [1, 1], f"round {round_no}"
        assert open_alerts(first.engine, fingerprint) == 1, f"round {round_no}: {fingerprint}"
        statuses = [m["status"] for m in alert_messages(first.engine, fingerprint)]
        assert statuses == ["open"], f"round {round_no}: {statuses}"
        with first.engine.connect() as conn:
            all_open = conn.execute(select(t.alerts.c.fingerprint).where(
                t.alerts.c.key_account_id == ka, t.alerts.c.status == "open")).scalars().all()
        assert all_open == [fingerprint], f"round {round_no}"


def test_contradicting_events_in_parallel_then_withdrawal_resolves_once(two_processors):
    """After the race, withdrawing one side and re-agreeing in parallel still leaves one consistent alert."""
    first, second = two_processors
    for round_no in range(10):
        ka = f"KW{round_no}-{uuid.uuid4().hex[:6]}"
        first.process(key_account_setup(ka))
        in_parallel(lambda: first.process([global_contract(ka, f"{ka}-C1")]),
                    lambda: second.process([global_contract(ka, f"{ka}-C2")]))
        withdraw = record("erp.agreements", event("agreement.withdrawn", {
            "agreement_id": f"{ka}-C2", "version": 2, "withdrawn_by": "gk"}))
        in_parallel(lambda: first.process([withdraw]), lambda: second.process([global_contract(ka, f"{ka}-C3")]))
        old = f"duplicate_global_contract:{ka}:{ka}-C1|{ka}-C2"
        new = f"duplicate_global_contract:{ka}:{ka}-C1|{ka}-C3"
        assert [m["status"] for m in alert_messages(first.engine, old)] == ["open", "resolved"]
        assert [m["status"] for m in alert_messages(first.engine, new)] == ["open"]
        assert open_alerts(first.engine, old) == 0
        assert open_alerts(first.engine, new) == 1


# -- the same event delivered to two processors at once --------------------------------------------

def test_same_event_in_parallel_is_applied_once(two_processors):
    first, second = two_processors
    for round_no in range(ROUNDS):
        ka = f"KD{round_no}-{uuid.uuid4().hex[:6]}"
        first.process(key_account_setup(ka))
        dunning_id = f"{ka}-DUN"
        value = dunning(ka, dunning_id)
        results = in_parallel(lambda: first.process([record("finance.dunning", value)]),
                              lambda: second.process([record("finance.dunning", value)]))
        assert sorted((r.processed, r.duplicates) for r in results) == [(0, 1), (1, 0)], f"round {round_no}"
        fingerprint = f"key_account_dunning:{ka}:{dunning_id}"
        assert [m["status"] for m in alert_messages(first.engine, fingerprint)] == ["open"], f"round {round_no}"
        assert [i["action"] for i in instructions(first.engine, dunning_id)] == ["hold"], f"round {round_no}"


def test_same_conflicting_event_in_parallel_is_applied_once(two_processors):
    """Both workers get the second contract (redelivery after a rebalance): one alert, one message."""
    first, second = two_processors
    for round_no in range(20):
        ka = f"KE{round_no}-{uuid.uuid4().hex[:6]}"
        first.process(key_account_setup(ka) + [global_contract(ka, f"{ka}-C1")])
        duplicate = global_contract(ka, f"{ka}-C2")
        in_parallel(lambda: first.process([duplicate]), lambda: second.process([duplicate]))
        fingerprint = f"duplicate_global_contract:{ka}:{ka}-C1|{ka}-C2"
        assert [m["status"] for m in alert_messages(first.engine, fingerprint)] == ["open"], f"round {round_no}"


# -- escalation --------------------------------------------------------------------------------

def escalated_messages(engine: Engine, alert_id: str) -> list[dict]:
    return [m for m in alert_messages(engine, alert_id) if m["status"] == "escalated"]


def hold_alert_id(engine: Engine, ka: str, dunning_id: str) -> str:
    (message,) = alert_messages(engine, f"key_account_dunning:{ka}:{dunning_id}")
    assert message["due_at"] is not None
    return message["alert_id"]


def test_two_timers_escalate_a_due_alert_exactly_once(postgres_database):
    settings = Settings(database_url=postgres_database, decision_window_s=60)
    engines = [make_engine(postgres_database) for _ in range(2)]
    try:
        create_tables(engines[0])
        clock = Clock()
        processor = Processor(engines[0], settings, clock=clock)
        timers = [EscalationTimer(engine, settings, clock=clock, instance=f"timer-{i}")
                  for i, engine in enumerate(engines)]
        for round_no in range(ROUNDS):
            ka = f"KT{round_no}-{uuid.uuid4().hex[:6]}"
            dunning_id = f"{ka}-DUN"
            processor.process(key_account_setup(ka) + [record("finance.dunning", dunning(ka, dunning_id))])
            alert_id = hold_alert_id(engines[0], ka, dunning_id)
            assert in_parallel(*(timer.escalate_due for timer in timers)) == [0, 0]
            clock.now += timedelta(seconds=61)
            counts = in_parallel(*(timer.escalate_due for timer in timers))
            assert sorted(counts) == [0, 1], f"round {round_no}: {counts}"
            escalated = escalated_messages(engines[0], alert_id)
            assert len(escalated) == 1, f"round {round_no}"
            # assignee was the local KAM: escalates to the senior KAM
            assert escalated[0]["assignee"] == "sen"
            assert in_parallel(*(timer.escalate_due for timer in timers)) == [0, 0]
    finally:
        for engine in engines:
            engine.dispose()


@pytest.mark.parametrize("acknowledged", [False, True], ids=["open", "acknowledged"])
def test_restart_between_alert_and_due_at_still_escalates_exactly_once(postgres_database, acknowledged):
    settings = Settings(database_url=postgres_database, decision_window_s=2)
    ka = f"KR-{uuid.uuid4().hex[:6]}"
    dunning_id = f"{ka}-DUN"

    engine = make_engine(postgres_database)
    create_tables(engine)
    clock = Clock()
    processor = Processor(engine, settings, clock=clock)
    timer = EscalationTimer(engine, settings, clock=clock)
    processor.process(key_account_setup(ka) + [record("finance.dunning", dunning(ka, dunning_id))])
    alert_id = hold_alert_id(engine, ka, dunning_id)
    if acknowledged:
        clock.now += timedelta(seconds=1)
        processor.process([record("kam.decisions", event("decision.made", {
            "alert_id": alert_id, "decision": "acknowledge", "decided_by": "lk-it", "comment": None}))])
    assert timer.escalate_due() == 0
    engine.dispose()  # the service stops before due_at ...

    engine = make_engine(postgres_database)  # ... and a new one starts after it
    try:
        later = Clock(T0 + timedelta(seconds=3))
        timer = EscalationTimer(engine, settings, clock=later, instance="after-restart")
        assert timer.escalate_due() == 1
        assert timer.escalate_due() == 0
        later.now += timedelta(hours=1)
        assert timer.escalate_due() == 0
        escalated = escalated_messages(engine, alert_id)
        assert len(escalated) == 1
        assert escalated[0]["assignee"] == "sen"
        with engine.connect() as conn:
            status = conn.execute(select(t.alerts.c.status).where(t.alerts.c.alert_id == alert_id)).scalar_one()
        assert status == "escalated"
    finally:
        engine.dispose()


def test_decision_racing_escalation_never_escalates_a_closed_alert(postgres_database):
    """A KAM's `resolve` and the timer meet at due_at: either order is fine, but never escalated after resolved."""
    settings = Settings(database_url=postgres_database, decision_window_s=60)
    engines = [make_engine(postgres_database) for _ in range(2)]
    try:
        create_tables(engines[0])
        clock = Clock()
        processor = Processor(engines[0], settings, clock=clock, instance="worker")
        timer = EscalationTimer(engines[1], settings, clock=clock, instance="timer")
        seen = set()
        for round_no in range(30):
            ka = f"KX{round_no}-{uuid.uuid4().hex[:6]}"
            processor.process(key_account_setup(ka))
            processor.process([global_contract(ka, f"{ka}-C1"), global_contract(ka, f"{ka}-C2")])
            fingerprint = f"duplicate_global_contract:{ka}:{ka}-C1|{ka}-C2"
            (opened,) = alert_messages(engines[0], fingerprint)
            clock.now += timedelta(seconds=61)
            decision = record("kam.decisions", event("decision.made", {
                "alert_id": opened["alert_id"], "decision": "resolve", "decided_by": "gk", "comment": None}))
            in_parallel(lambda: processor.process([decision]), timer.escalate_due)
            statuses = tuple(m["status"] for m in alert_messages(engines[0], fingerprint))
            assert statuses in {("open", "resolved"), ("open", "escalated", "resolved")}, f"round {round_no}"
            seen.add(statuses)
            assert open_alerts(engines[0], fingerprint) == 0
            assert timer.escalate_due() == 0
    finally:
        for engine in engines:
            engine.dispose()


def test_an_escalated_conflict_stays_escalated_when_a_processor_with_a_warm_cache_refreshes_it(postgres_database):
    """The timer changes cached conflict alerts: it bumps their key account's version, so the processor's
    cached copy (still open, not escalated) is read again instead of being written back."""
    settings = Settings(database_url=postgres_database, decision_window_s=2)
    ka = f"KE-{uuid.uuid4().hex[:6]}"
    engine = make_engine(postgres_database)
    create_tables(engine)
    clock = Clock()
    processor = Processor(engine, settings, clock=clock)
    try:
        processor.process(key_account_setup(ka) + [global_contract(ka, f"{ka}-A1"), global_contract(ka, f"{ka}-A2")])
        clock.now = T0 + timedelta(seconds=3)
        timer = EscalationTimer(engine, settings, clock=clock)
        assert timer.escalate_due() == 1
        newer = json.loads(global_contract(ka, f"{ka}-A2").value)
        newer["data"].update(version=2, region="EMEA")
        processor.process([record("erp.agreements", newer)])  # changes the conflict's versions: the alert is refreshed
        with engine.connect() as conn:
            rows = conn.execute(select(t.alerts.c.status, t.alerts.c.escalated, t.alerts.c.versions)
                                .where(t.alerts.c.key_account_id == ka, t.alerts.c.due_at.is_not(None))).all()
        assert [(status, escalated) for status, escalated, _ in rows] == [("escalated", True)]
        assert f"{ka}-A2@2" in rows[0][2].split("|")  # the refresh did happen
        clock.now += timedelta(hours=1)
        assert timer.escalate_due() == 0
    finally:
        engine.dispose()


# -- which key accounts a promotion undercuts: read before the locks, kept only if still current -----

def promotion(promotion_id: str, amount: str) -> InputRecord:
    return record("erp.promotions", event("promotion.launched", {
        "promotion_id": promotion_id, "country": "IT", "product_id": "P1", "price": amount, "currency": "EUR",
        "valid_from": "2027-01-01", "valid_to": "2027-12-31", "audience": "all_customers", "launched_by": "mkt"}))


def undercut_fingerprint(ka: str, promotion_id: str) -> str:
    return f"promotion_undercuts_global:{ka}:{'|'.join(sorted([f'{ka}-G', promotion_id]))}"


def undercut_reads(monkeypatch) -> list[int]:
    """Counts the reads of which key accounts promotions may undercut."""
    import services.store.key_account_reads as reads_module
    from services.store.state import StateRepository

    reads, read = [], StateRepository._read

    def counting_read(self, sql, *args, **kwargs):
        if sql == reads_module._UNDERCUT_SQL:
            reads.append(1)
        return read(self, sql, *args, **kwargs)

    monkeypatch.setattr(StateRepository, "_read", counting_read)
    return reads


def before_its_first_lock(monkeypatch, processor: Processor, other: Callable[[], object]) -> None:
    """Run `other` (another processor's batch) after `processor`'s next batch read and before it locks."""
    lock, done = processor._lock, []

    def lock_after_the_other_commits(batch, keys):
        if not done:
            done.append(other())
        return lock(batch, keys)

    monkeypatch.setattr(processor, "_lock", lock_after_the_other_commits)


@contextlib.contextmanager
def while_it_writes(monkeypatch, processor: Processor, other: Callable[[], object]):
    """Start `other` in a thread once `processor`'s batch has judged and is about to write, give it two
    seconds (without a lock in common it is done by then), then write; the block waits for it to end."""
    write, threads = processor._write, []

    def write_while_the_other_runs(batch):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join(timeout=2)
        threads.append(thread)
        write(batch)

    monkeypatch.setattr(processor, "_write", write_while_the_other_runs)
    yield
    threads[0].join(timeout=30)
    assert not threads[0].is_alive()


def test_a_promotion_batch_reads_the_undercut_key_accounts_once_when_nobody_else_wrote(two_processors, monkeypatch):
    first, _ = two_processors
    ka = f"KU-{uuid.uuid4().hex[:6]}"
    first.process(key_account_setup(ka))
    first.process([price(ka, f"{ka}-G", "global", "100.00")])  # the cache current again after the master data
    reads = undercut_reads(monkeypatch)
    first.process([promotion(f"{ka}-PR", "80.00")])
    assert reads == [1], "read again under the locks although no transaction wrote in between"
    assert open_alerts(first.engine, undercut_fingerprint(ka, f"{ka}-PR")) == 1


def test_a_global_price_committed_between_a_promotions_first_read_and_its_locks_is_judged(two_processors,
                                                                                         monkeypatch):
    """The promotion's process found one key account with a global price for the product; before it
    locked that one, another process committed a global price for a second key account (and judged
    it without the promotion, not yet committed). The store's `commits` version moved: the promotion's
    process reads again under its locks and raises the second key account's alert itself."""
    first, second = two_processors
    suffix = uuid.uuid4().hex[:6]
    known, late = f"KK-{suffix}", f"KL-{suffix}"
    first.process(key_account_setup(known) + key_account_setup(late))
    first.process([price(known, f"{known}-G", "global", "100.00")])
    reads = undercut_reads(monkeypatch)
    before_its_first_lock(monkeypatch, first, lambda: second.process([price(late, f"{late}-G", "global", "100.00")]))
    first.process([promotion(f"PR-{suffix}", "80.00")])
    assert len(reads) == 2  # before the locks, and again under them
    for ka in (known, late):
        assert open_alerts(first.engine, undercut_fingerprint(ka, f"PR-{suffix}")) == 1, ka


def test_an_agreement_version_committed_between_a_batchs_first_read_and_its_locks_wins(two_processors, monkeypatch):
    """What a batch read before its locks is kept only if no transaction committed meanwhile: here
    another process commits version 3 after this batch read version 1 and before it locks, so this
    batch's version 2 must be found stale, not written over version 3."""
    first, second = two_processors
    ka = f"KV-{uuid.uuid4().hex[:6]}"
    first.process(key_account_setup(ka))
    first.process([price(ka, f"{ka}-G", "global", "100.00")])

    def version(number: int) -> InputRecord:
        value = json.loads(price(ka, f"{ka}-G", "global", "100.00").value)
        value["data"].update(version=number, price=f"{100 + number}.00")
        return record("erp.agreements", value)

    before_its_first_lock(monkeypatch, first, lambda: second.process([version(3)]))
    assert first.process([version(2)]).stale == 1
    with first.engine.connect() as conn:
        stored = conn.execute(select(t.agreements.c.version, t.agreements.c.price)
                              .where(t.agreements.c.agreement_id == f"{ka}-G")).one()
    assert tuple(stored) == (3, "103.00")


def test_the_commits_version_moves_with_every_transaction_that_writes_state_and_only_then(postgres_database):
    settings = Settings(database_url=postgres_database, decision_window_s=2)
    engine = make_engine(postgres_database)
    create_tables(engine)
    clock = Clock()
    processor = Processor(engine, settings, clock=clock)

    def commits() -> int:
        with engine.connect() as conn:
            return conn.execute(select(t.versions.c.value).where(t.versions.c.name == "commits")).scalar_one()

    try:
        ka = f"KC-{uuid.uuid4().hex[:6]}"
        batch = key_account_setup(ka) + [global_contract(ka, f"{ka}-A1"), global_contract(ka, f"{ka}-A2")]
        before = commits()
        processor.process(batch)
        assert commits() == before + 1
        processor.process(batch)  # every event a duplicate: nothing written
        assert commits() == before + 1
        clock.now = T0 + timedelta(seconds=3)
        assert EscalationTimer(engine, settings, clock=clock).escalate_due() == 1
        assert commits() == before + 2
    finally:
        engine.dispose()


def test_a_promotion_and_a_new_global_price_for_its_product_in_two_processes_at_once_raise_the_alert(
        two_processors, monkeypatch):
    """The promotion's process has judged (no key account had a global price for the product) and is
    about to commit when the other process applies a global price for that product: it must wait
    for the promotion and see it, or the conflict goes unflagged (each missed the other's row)."""
    first, second = two_processors
    ka = f"KP-{uuid.uuid4().hex[:6]}"
    first.process(key_account_setup(ka))
    first.process([global_contract(ka, f"{ka}-C1")])
    with while_it_writes(monkeypatch, first, lambda: second.process([price(ka, f"{ka}-G", "global", "100.00")])):
        first.process([promotion(f"{ka}-PR", "80.00")])  # without a lock in common the price misses it
    assert open_alerts(first.engine, undercut_fingerprint(ka, f"{ka}-PR")) == 1


def test_a_promotion_moved_to_another_product_holds_its_old_product_against_a_new_global_price(
        two_processors, monkeypatch):
    """The promotion moves from P1 to P2 while another process adds a global P1 price: that process must
    wait and see the promotion's new product, or it raises an undercut alert nothing would resolve."""
    first, second = two_processors
    ka = f"KM-{uuid.uuid4().hex[:6]}"
    first.process(key_account_setup(ka))
    first.process([global_contract(ka, f"{ka}-C1")])
    first.process([promotion(f"{ka}-PR", "80.00")])  # (IT, P1); no global price yet: no alert
    moved = json.loads(promotion(f"{ka}-PR", "80.00").value)
    moved["time"] = "2027-01-11T09:00:00Z"
    moved["data"]["product_id"] = "P2"
    with while_it_writes(monkeypatch, first, lambda: second.process([price(ka, f"{ka}-G", "global", "100.00")])):
        first.process([record("erp.promotions", moved)])  # without the old product's lock the move is missed
    assert open_alerts(first.engine, undercut_fingerprint(ka, f"{ka}-PR")) == 0

"""Background marking of published outputs, coalesced offset commits and the ops lag: nothing lost, nothing asked twice."""

import asyncio
import contextlib
import types

import pytest
from sqlalchemy import select

from services.outbox import OutboxRelay
from services.store import tables as t
from services.store.bulk import bulk_insert
from services.store.db import create_tables, make_engine


class _Batch:
    def __init__(self):
        self.records = []

    def append(self, **record):
        self.records.append(record)
        return True


class _Producer:
    """Enough of AIOKafkaProducer for the relay: record batches, acknowledged at once, offsets counted per partition."""

    def __init__(self):
        self.sent: list[tuple[str, int, dict]] = []
        self.ends: dict[tuple[str, int], int] = {}

    async def partitions_for(self, topic):
        return {0, 1, 2}

    def create_batch(self):
        return _Batch()

    async def send_batch(self, batch, topic, *, partition):
        base = self.ends.get((topic, partition), 0)
        self.ends[(topic, partition)] = base + len(batch.records)
        self.sent += [(topic, partition, r) for r in batch.records]
        future = asyncio.get_running_loop().create_future()
        future.set_result(types.SimpleNamespace(offset=base))
        return future


async def test_published_rows_are_marked_in_the_background_and_not_published_again_meanwhile(sqlite_url):
    engine = make_engine(sqlite_url)
    create_tables(engine)
    with engine.begin() as conn:
        ids = sorted(i for (i,) in bulk_insert(conn, t.outbox, [
            {"topic": "kam.alerts", "key": f"kam-{n % 4}", "value": f'{{"n": {n}}}', "created_at": "2027-01-01T00:00:00Z"}
            for n in range(10)], returning=("id",)))
    producer = _Producer()
    relay = OutboxRelay(engine, producer, instance="test", bootstrap="unused:9092")
    relay._store_id = "store"
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(select(t.outbox.c.id, t.outbox.c.topic, t.outbox.c.key, t.outbox.c.value)
                                               .order_by(t.outbox.c.id))]

    assert await relay._publish(rows) == 10
    assert await relay.publish_pending() == 0  # still unsent in the store, but known as published
    await relay.marked(timeout=10)

    with engine.connect() as conn:
        unsent = conn.execute(select(t.outbox.c.id).where(t.outbox.c.sent_at.is_(None))).all()
        positions = {(r.topic, r.partition): r.next_offset for r in conn.execute(select(t.relay_positions))}
    assert unsent == []
    assert len(producer.sent) == 10 and sorted(int(r["headers"][0][1].split(b":")[1]) for *_, r in producer.sent) == ids
    assert positions == producer.ends  # how far each partition was published, recorded with the marking
    for key in {f"kam-{n % 4}" for n in range(10)}:  # one partition per key, records in row order
        sent = [(p, r["value"]) for _, p, r in producer.sent if r["key"] == key.encode()]
        assert len({p for p, _ in sent}) == 1
        assert [v for _, v in sent] == sorted((v for _, v in sent), key=lambda v: int(v.split(b" ")[1][:-1]))
    engine.dispose()


async def test_offsets_of_partitions_moved_to_another_member_are_left_to_it():
    from aiokafka import TopicPartition

    from consumers.service import Service
    from services.config import Settings

    mine, moved = TopicPartition("crm.accounts", 0), TopicPartition("crm.accounts", 1)
    committed = []

    class _Consumer:
        def assignment(self):
            return {mine}

        async def commit(self, offsets):
            committed.append(offsets)

    service = Service(Settings(database_url="sqlite://"))
    service.consumer = _Consumer()
    service._uncommitted = {mine: 10, moved: 7}
    await service._commit_uncommitted()
    assert committed == [{mine: 10}]
    service.engine.dispose()


def _outbox_rows(engine, n: int, first: int = 0) -> list[tuple]:
    with engine.begin() as conn:
        rows = [{"topic": "kam.alerts", "key": f"kam-{i % 4}", "value": f'{{"n": {i}}}',
                 "created_at": "2027-01-01T00:00:00Z"} for i in range(first, first + n)]
        ids = sorted(i for (i,) in bulk_insert(conn, t.outbox, rows, returning=("id",)))
    return [(i, r["topic"], r["key"], r["value"]) for i, r in zip(ids, rows)]


@contextlib.asynccontextmanager
async def _running_relay(engine, producer, monkeypatch, instance: str = "test", *, takes_over: bool = False):
    """A relay running on `engine` until the block ends (failed rounds retried after 50 ms). Unless it
    `takes_over`, taking the lease skips the takeover scan, which reads Kafka: nothing to recover here."""
    import services.outbox.relay as relay_loop

    monkeypatch.setattr(relay_loop, "RETRY_S", 0.05)
    relay = OutboxRelay(engine, producer, instance=instance, bootstrap="unused:9092")

    async def no_takeover():
        relay._store_id = "store"
        return 0

    if not takes_over:
        relay.recover = no_takeover
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield relay, task
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def _until(condition, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_the_relay_outlives_a_store_that_fails_for_a_while_and_publishes_everything_afterwards(
        store, monkeypatch):
    from sqlalchemy.exc import OperationalError

    producer = _Producer()
    async with _running_relay(store, producer, monkeypatch) as (relay, task):
        read_store, failures = relay._pending, []

        def flaky_store(published):
            if len(failures) < 3:
                failures.append(1)
                raise OperationalError("SELECT", {}, Exception("server closed the connection unexpectedly"))
            return read_store(published)

        relay._pending = flaky_store
        _outbox_rows(store, 5)
        relay.notify()
        await _until(lambda: len(producer.sent) == 5)
        assert len(failures) == 3 and not task.done()
        committed = _outbox_rows(store, 5, first=5)
        relay.publish_committed(committed)  # and what this process commits afterwards goes out as usual
        await _until(lambda: len(producer.sent) == 10)
    with store.connect() as conn:
        assert conn.execute(select(t.outbox.c.id).where(t.outbox.c.sent_at.is_(None))).all() == []


async def test_a_busy_relay_reads_the_store_only_every_poll_interval_yet_finds_other_processes_outputs(
        store, monkeypatch):
    producer = _Producer()
    async with _running_relay(store, producer, monkeypatch) as (relay, _):
        reads = []
        read_store = relay._pending
        relay._pending = lambda published: reads.append(1) or read_store(published)
        await _until(lambda: reads)  # the first round after taking the lease reads the store
        reads.clear()
        for batch in range(20):  # batches this process commits, one every 5 ms
            relay.publish_committed(_outbox_rows(store, 3, first=3 * batch))
            await asyncio.sleep(0.005)
        await _until(lambda: len(producer.sent) == 60)
        assert len(reads) <= 2, "the store was read for outputs this process had handed over itself"
        _outbox_rows(store, 2, first=1000)  # committed by another process: no hand-over, no notify
        await _until(lambda: len(producer.sent) == 62, timeout=5)


async def test_a_relay_without_the_lease_does_not_ask_for_it_on_every_commit(store, monkeypatch):
    import services.outbox.relay as relay_loop

    asked: list[str] = []
    hold = relay_loop.hold_lease

    def counting_hold(engine_, lease, instance, *args):
        asked.append(instance)
        return hold(engine_, lease, instance, *args)

    monkeypatch.setattr(relay_loop, "hold_lease", counting_hold)
    async with _running_relay(store, _Producer(), monkeypatch) as (holder, _):
        await _until(lambda: holder._holding)
        async with _running_relay(store, _Producer(), monkeypatch, "other", takes_over=True) as (other, _):
            await _until(lambda: "other" in asked)
            for n in range(50):  # this process commits a batch every 10 ms: each wakes its relay
                other.publish_committed([(10_000 + n, "kam.alerts", "k", "{}")])
                await asyncio.sleep(0.01)
            assert asked.count("other") <= 2, asked.count("other")


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def test_the_store_is_not_read_back_for_outputs_published_but_not_yet_marked(database, request):
    """A poll of the store used to return mostly rows this process had just published itself (their
    marking lagging behind): on PostgreSQL it now leaves them out; on both nothing is sent twice."""
    url = request.getfixturevalue("sqlite_url" if database == "sqlite" else "postgres_database")
    engine = make_engine(url)
    create_tables(engine)
    producer = _Producer()
    relay = OutboxRelay(engine, producer, instance="test", bootstrap="unused:9092")
    relay._store_id = "store"
    mine = _outbox_rows(engine, 6)
    others = _outbox_rows(engine, 3, first=100)
    assert await relay._publish(mine[:4]) == 4
    relay._marking.cancel()  # as if the marking had not landed yet
    unmarked = relay._unmarked

    read = [row[0] for row in relay._pending(unmarked)]
    expected = [row[0] for row in mine[4:] + others]
    if database == "postgresql":
        assert read == expected
    else:
        assert read == [row[0] for row in mine] + [row[0] for row in others]
    assert await relay.publish_pending() == 5
    assert sorted(int(r["headers"][0][1].split(b":")[1]) for *_, r in producer.sent) == sorted(
        row[0] for row in mine + others)
    engine.dispose()


async def test_a_backlog_is_applied_with_a_long_gil_switch_interval_and_live_traffic_with_the_default():
    import sys

    from aiokafka import TopicPartition

    from consumers.service import BACKLOG_SWITCH_INTERVAL_S, LIVE_SWITCH_INTERVAL_S, Service
    from services.config import Settings
    from services.inputs import InputRecord
    from services.processor import BatchResult

    partition = TopicPartition("crm.accounts", 0)
    backlog = [InputRecord("crm.accounts", 0, offset, None, b"{}") for offset in range(2000)]
    live = [InputRecord("crm.accounts", 0, offset, None, b"{}") for offset in range(2000, 2003)]
    fetches = [backlog, live]
    service = Service(Settings(database_url="sqlite://", max_batch=2000))

    class _Consumer:
        async def getmany(self, timeout_ms, max_records):
            if fetches:
                return {partition: fetches.pop(0)}
            service.request_stop()
            return {}

        def assignment(self):
            return {partition}

        async def commit(self, offsets):
            pass

    applied = []

    async def apply(records, decoded):
        applied.append((len(records), sys.getswitchinterval()))
        return BatchResult()

    service.consumer = _Consumer()
    service.relay = types.SimpleNamespace(publish_committed=lambda outputs: None)
    service._apply = apply
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.002)  # whatever the process had: it is given back
    try:
        await service._consume()
        assert applied == [(2000, pytest.approx(BACKLOG_SWITCH_INTERVAL_S)), (3, pytest.approx(LIVE_SWITCH_INTERVAL_S))]
        assert sys.getswitchinterval() == pytest.approx(0.002)
    finally:
        sys.setswitchinterval(before)
        service.engine.dispose()


async def test_a_slow_lease_renewal_does_not_hold_publishing_back(store, monkeypatch):
    """The lease is renewed in the background while it has time left (on SQLite a renewal waits for
    the one writer): outputs committed meanwhile go out at once, and the lease is still renewed."""
    import threading

    import services.outbox.relay as relay_loop

    hold = relay_loop.hold_lease
    renewing, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow_renewal(*args):
        calls.append(1)
        if len(calls) > 1:  # the first call takes the lease; the renewals wait
            renewing.set()
            release.wait(10)
        return hold(*args)

    monkeypatch.setattr(relay_loop, "hold_lease", slow_renewal)
    producer = _Producer()
    async with _running_relay(store, producer, monkeypatch) as (relay, _):
        relay.lease_ttl_s = 0.9  # a renewal is due every 0.3 s
        await _until(lambda: relay._holding)
        await _until(renewing.is_set, timeout=5)
        relay.publish_committed([(20_000, "kam.alerts", "k", "{}")])
        await _until(lambda: len(producer.sent) == 1, timeout=0.25)  # not after the renewal
        release.set()
        await _until(lambda: len(calls) >= 3)
        assert relay._holding


def test_a_read_only_connection_does_not_wait_for_the_sqlite_writer(sqlite_url):
    """BEGIN IMMEDIATE queues writers; a reader marked READ_ONLY begins plainly and reads at once (WAL)."""
    import threading
    import time

    from sqlalchemy import text

    from services.store.db import READ_ONLY

    engine = make_engine(sqlite_url)
    create_tables(engine)
    writing, done = threading.Event(), threading.Event()

    def writer():
        with engine.begin() as conn:  # holds the write lock until `done`
            conn.execute(text("UPDATE versions SET value = value WHERE name = 'none'"))
            writing.set()
            done.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert writing.wait(5)
        began = time.monotonic()
        with engine.connect().execution_options(**READ_ONLY) as conn:
            conn.execute(text("SELECT count(*) FROM outbox")).scalar()
        assert time.monotonic() - began < 1.0
    finally:
        done.set()
        thread.join()
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_published_rows_leave_the_store_and_their_ids_are_never_handed_out_again(backend, request, monkeypatch):
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "postgres_database")
    engine = make_engine(url)
    create_tables(engine)
    producer = _Producer()
    try:
        async with _running_relay(engine, producer, monkeypatch) as (relay, _):
            first = _outbox_rows(engine, 5)
            relay.notify()
            await _until(lambda: len(producer.sent) == 5)

            def outbox_ids():
                with engine.connect() as conn:
                    return conn.execute(select(t.outbox.c.id)).all()

            await _until(lambda: outbox_ids() == [])  # marking them sent deletes them
            # The relay still remembers the ids it published: a new row with one of them would never go out.
            later = _outbox_rows(engine, 1, first=5)
            assert later[0][0] > max(row[0] for row in first)
            relay.notify()
            await _until(lambda: len(producer.sent) == 6)
    finally:
        engine.dispose()

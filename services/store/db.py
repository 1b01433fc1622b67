"""Engines for the two supported stores and the few places where they differ.

PostgreSQL is the production store (psycopg 3); SQLite is the embedded default. Both run
the same SQLAlchemy Core statements; only upserts, locking and transaction start differ.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import zlib
from pathlib import Path
from collections.abc import Iterable

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url

from services.redact import mask_url



def make_engine(url: str, *, checkpoints_apart: bool = False) -> Engine:
    """An engine for a plain SQLAlchemy URL (`sqlite:///…`, `postgresql://…`), with our own drivers.

    `checkpoints_apart` (SQLite): its commits never copy the write-ahead log into the database file;
    the owner runs `checkpoint_sqlite` now and then instead (see there).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        # No pre-ping: it cost a round trip per transaction. A connection the server dropped fails its
        # first statement instead; SQLAlchemy then discards the pool's connections, and every caller
        # retries (the batch loop, the relay, the timers, the ops reporter).
        engine = create_engine(parsed.set(drivername="postgresql+psycopg"), pool_size=4, max_overflow=4,
                               insertmanyvalues_page_size=1000)
    elif parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed.set(drivername="sqlite+pysqlite"),
                               connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False,
                                             "factory": _QueuedWriterConnection})
        _serialise_sqlite_writers(engine, checkpoints_apart)
    else:
        raise ValueError(f"unsupported database URL {mask_url(url)!r}: use sqlite:///… or postgresql://…")
    return engine


#: Execution options of a connection that only reads: on SQLite its transactions take no write lock
#: (a plain BEGIN; in WAL mode a reader neither waits for the writer nor holds it up).
READ_ONLY = {"onevoice_read_only": True}


SQLITE_BUSY_TIMEOUT_S = 30
# A new store's page size. Every batch dirties a page in each index it touches, and SQLite writes whole
# pages to its log and again at the checkpoint: with 1 KiB pages the service wrote 10-12 MB/s at 500
# events/s instead of 23-25, and the disk's stalls under that load stopped setting the latency tail
# (p99 92-115 ms against 215-346 ms, alternating runs, bench/RESULTS.md). Stores made before keep theirs.
SQLITE_PAGE_SIZE = 1024
_WRITER_TURNS: dict[str, _WriterTurn] = {}  # database file -> the turn of this process's writers on it
_WRITER_TURNS_GUARD = threading.Lock()


class _WriterTurn:
    def __init__(self):
        self.lock = threading.Lock()
        self.holder: int | None = None  # thread id

    def take(self) -> bool:
        """Wait for the turn; False when not taken: this thread holds it already (it then meets SQLite's
        own busy wait, as without the queue), or the wait outlasted the busy timeout."""
        if self.holder == threading.get_ident() or not self.lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_S):
            return False
        self.holder = threading.get_ident()
        return True

    def give_back(self) -> None:
        self.holder = None
        self.lock.release()


def _writer_turn(database: str) -> _WriterTurn | None:
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        return None  # every connection its own database: nobody to queue behind
    with _WRITER_TURNS_GUARD:
        return _WRITER_TURNS.setdefault(os.path.realpath(database), _WriterTurn())


class _QueuedWriterConnection(sqlite3.Connection):
    """A SQLite connection whose write transactions wait their turn among this process's writers.

    SQLite lets a writer that finds the lock taken sleep and try again, up to 100 ms at a time; the
    service's batches take the lock nearly back to back, so the relay's marking, the escalation timer
    and the lease renewal missed the gaps for 0.2-2.9 s (500 events/s). Waiting on a lock of this
    process instead, each is woken when the writer before it commits. Other processes still meet
    SQLite's own busy wait.
    """

    _turn: _WriterTurn | None = None

    def take_turn(self, database: str) -> None:
        """Before BEGIN IMMEDIATE (run by SQLAlchemy, so a locked store is its OperationalError, which
        the callers know as an outage); a failed BEGIN must `give_turn_back`."""
        turn = _writer_turn(database)
        self._turn = turn if turn is not None and turn.take() else None

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.give_turn_back()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.give_turn_back()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.give_turn_back()

    def give_turn_back(self) -> None:
        turn, self._turn = self._turn, None
        if turn is not None:
            turn.give_back()


def _serialise_sqlite_writers(engine: Engine, checkpoints_apart: bool) -> None:
    """SQLite has one writer; BEGIN IMMEDIATE takes the write lock up front so two processes queue, not fail
    (and this process's writers wait their turn first: `_QueuedWriterConnection`).

    Not for connections marked `READ_ONLY`: the relay's look for unsent outputs had waited in line
    behind every batch for the write lock it never used, 0.3–5 s at 500 events/s.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")  # before WAL mode; a no-op on an existing store
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: the log is on disk before COMMIT returns. The consumer commits its Kafka offsets right after,
        # and with NORMAL a committed batch can vanish in a power loss or OS crash (SQLite keeps it across a
        # crash of the process only): its inputs would be lost, and the outputs already published would
        # disagree with the store. It costs one fsync per commit (0.4-0.6 ms on the project VM).
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        # 64 MiB of pages instead of 2: a store of tens of MB no longer re-reads its index pages through
        # the kernel at every batch (16-event batches 4-7 % faster, a third less system time)
        cursor.execute("PRAGMA cache_size=-65536")
        if checkpoints_apart:
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    database = engine.url.database or ":memory:"

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        if conn.get_execution_options().get("onevoice_read_only"):
            conn.exec_driver_sql("BEGIN")
        else:
            driver = conn.connection.dbapi_connection
            driver.take_turn(database)
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                driver.give_turn_back()
                raise


def checkpoint_sqlite(engine: Engine) -> None:
    """Copy the SQLite write-ahead log into the database file, without waiting for or blocking anyone.

    SQLite's default does it inside the commit that fills the log past 1,000 pages: every 50th
    small batch or so took 10-30 ms longer (p90 of a 16-event batch 24 -> 14 ms without it, p99
    27-37 -> 18-23 ms, in process). The service calls this from a thread every second instead.
    """
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:  # the driver's own call: no transaction around it (a checkpoint refuses one)
        conn.connection.dbapi_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")


def alembic_config(conn: Connection | None = None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.attributes["connection"] = conn
    return config


def create_tables(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent, safe when several processes start at once)."""
    from alembic import command

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(4242)"))
        command.upgrade(alembic_config(conn), "head")


def insert_stmt(conn: Connection, table):
    """The dialect's INSERT, which knows ON CONFLICT."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def lock_keys(conn: Connection, keys: Iterable[str]) -> None:
    """Serialise work on the same key accounts across processes until this transaction ends.

    Keys are locked in one statement, in sorted order, so two such statements never wait on each other
    in a cycle. A transaction that locks more keys later (while judging) can still meet one: PostgreSQL
    reports the deadlock and the batch is retried. SQLite needs nothing: BEGIN IMMEDIATE already made
    this the only writer.
    """
    if conn.dialect.name != "postgresql":
        return
    ids = sorted({_lock_id(key) for key in keys})
    if ids:
        with conn.connection.dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT unnest(%(ids)s::BIGINT[]) AS k "
                           "ORDER BY k) AS sorted_keys", {"ids": ids})


def _lock_id(key: str) -> int:
    return zlib.crc32(key.encode()) + (1 << 32)

"""The SQLite store's own settings: small pages, writers of one process taking turns, and the store's
fixed PostgreSQL statements run translated."""

from __future__ import annotations

import threading
import time

import pytest
from psycopg.rows import dict_row, namedtuple_row
from sqlalchemy import text

from services.store.bulk import fetch_rows, select_by_keys, sqlite_form
from services.store.db import SQLITE_PAGE_SIZE, create_tables, make_engine
from services.store import tables as t


def test_a_new_store_has_small_pages_a_write_ahead_log_and_a_large_cache(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    with engine.connect() as conn:
        driver = conn.connection.dbapi_connection
        assert driver.execute("PRAGMA page_size").fetchone()[0] == SQLITE_PAGE_SIZE == 1024
        assert driver.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert driver.execute("PRAGMA cache_size").fetchone()[0] == -65536
    engine.dispose()


def test_a_commit_is_on_disk_before_it_returns_so_kafka_offsets_may_follow_it(tmp_path):
    """In WAL mode `synchronous=NORMAL` syncs the log only at checkpoints: a committed batch could be gone
    after a power loss although its offsets were committed. Every connection of the store runs FULL."""
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    create_tables(engine)
    with engine.begin() as conn:
        assert conn.connection.dbapi_connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with engine.connect().execution_options(onevoice_read_only=True) as conn:
        assert conn.connection.dbapi_connection.execute("PRAGMA synchronous").fetchone()[0] == 2
    engine.dispose()


def test_a_store_made_with_other_pages_keeps_them(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:
        old.execute("PRAGMA page_size=4096")
        old.execute("CREATE TABLE t (x)")
    engine = make_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        assert conn.connection.dbapi_connection.execute("PRAGMA page_size").fetchone()[0] == 4096
    engine.dispose()


def test_a_waiting_writer_starts_as_soon_as_the_one_before_commits(tmp_path):
    """SQLite's own busy wait sleeps up to 100 ms between tries: after a 400 ms transaction, the waiting
    writer would start ~80 ms late. Writers of one process take turns on a lock instead."""
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    committed_at: list[float] = []
    started_at: list[float] = []
    holding = threading.Event()

    def first():
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t (v) VALUES ('first')"))
            holding.set()
            time.sleep(0.4)
        committed_at.append(time.monotonic())

    def second():
        holding.wait()
        time.sleep(0.05)
        with engine.begin() as conn:
            started_at.append(time.monotonic())
            conn.execute(text("INSERT INTO t (v) VALUES ('second')"))

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert started_at[0] - committed_at[0] < 0.03
    with engine.connect() as conn:
        assert conn.execute(text("SELECT v FROM t ORDER BY id")).scalars().all() == ["first", "second"]
    engine.dispose()


def test_a_failed_transaction_gives_the_turn_back(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
    with pytest.raises(Exception):
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t (id) VALUES (1)"))
            conn.execute(text("INSERT INTO t (id) VALUES (1)"))  # primary key taken: rolled back

    done = threading.Event()

    def writer():
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t (id) VALUES (2)"))
        done.set()

    threading.Thread(target=writer).start()
    assert done.wait(2), "the rolled-back transaction kept the writers' turn"
    engine.dispose()


def test_postgresql_forms_run_translated_with_booleans_and_row_shapes(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    create_tables(engine)
    with engine.begin() as conn:
        conn.execute(t.team_members.insert(), [
            {"account_id": "A1", "person_id": "p1", "role": "global_kam", "present": True,
             "event_time": "2027-01-01T00:00:00Z", "event_id": "e1"},
            {"account_id": "A1", "person_id": "p2", "role": "local_kam", "present": False,
             "event_time": "2027-01-01T00:00:00Z", "event_id": "e2"}])
        sql = ("SELECT person_id, present FROM team_members WHERE account_id = ANY(%(accounts)b::VARCHAR[]) "
               "AND role <> ALL(%(roles)b::VARCHAR[]) AND event_id <> %(not_this)s ORDER BY person_id")
        rows = fetch_rows(conn, sql, {"accounts": ["A1", "A2"], "roles": ["sales"], "not_this": "x"}, dict_row)
        assert rows == [{"person_id": "p1", "present": True}, {"person_id": "p2", "present": False}]
        named = fetch_rows(conn, sql, {"accounts": ["A1"], "roles": ["local_kam"], "not_this": "x"}, namedtuple_row)
        assert [(r.person_id, r.present) for r in named] == [("p1", True)]
        assert fetch_rows(conn, sql, {"accounts": [], "roles": [], "not_this": "x"}) == []
        found = select_by_keys(conn, t.team_members, ("account_id", "person_id", "role"),
                               [("A1", "p2", "local_kam"), ("A1", "p9", "sales")])
        assert [(r["person_id"], r["present"]) for r in found] == [("p2", False)]
    engine.dispose()


def test_a_form_sqlite_cannot_run_is_refused():
    with pytest.raises(ValueError):
        sqlite_form("SELECT * FROM unnest(%(a)b::VARCHAR[], %(b)b::VARCHAR[])")
    with pytest.raises(ValueError):
        sqlite_form("SELECT now()::date")


def test_a_store_locked_by_another_process_is_an_outage_and_the_turn_comes_back(tmp_path):
    import sqlite3

    from services.store.errors import transient_database_error

    path = tmp_path / "store.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x)"))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    with engine.connect() as conn:
        conn.connection.dbapi_connection.execute("PRAGMA busy_timeout=200")
        with pytest.raises(Exception) as refused:
            with conn.begin():
                pass
    assert transient_database_error(refused.value)  # waited out and retried like any outage, not a bad batch
    other.rollback()
    with engine.begin() as conn:  # the turn was given back
        conn.execute(text("INSERT INTO t VALUES (1)"))
    engine.dispose()

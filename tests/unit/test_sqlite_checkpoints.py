"""SQLite checkpoints beside the batches: the service's connections never checkpoint in a commit,
and `checkpoint_sqlite` copies the whole log into the database without blocking anyone."""

from __future__ import annotations

from sqlalchemy import text

from services.store.db import checkpoint_sqlite, make_engine


def _write_rows(engine, n: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)"))
    for i in range(n):
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": "x" * 2000 + str(i)})


def _log_frames(engine) -> tuple[int, int]:
    """(frames in the log, frames of it in the database), as a checkpoint with nothing left to copy reports them."""
    with engine.connect() as conn:
        _busy, log, done = conn.connection.dbapi_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return log, done


def test_commits_leave_the_log_alone_and_the_checkpoint_takes_it_all(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}", checkpoints_apart=True)
    with engine.connect() as conn:
        assert conn.connection.dbapi_connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    _write_rows(engine, 1500)  # a page or more per commit: past SQLite's default of 1,000
    with engine.connect() as conn:
        page_size = conn.connection.dbapi_connection.execute("PRAGMA page_size").fetchone()[0]
    log_frames = ((tmp_path / "store.db-wal").stat().st_size - 32) // (page_size + 24)
    assert log_frames > 1200, "a commit checkpointed the log (it would have restarted after 1,000 pages)"
    checkpoint_sqlite(engine)
    log, done = _log_frames(engine)
    assert log == done  # every frame of the log is in the database file now
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 1500
    engine.dispose()


def test_other_engines_keep_sqlites_own_checkpoints(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    with engine.connect() as conn:
        assert conn.connection.dbapi_connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    engine.dispose()

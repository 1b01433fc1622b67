"""A throwaway PostgreSQL cluster for one test session.

``start_postgres()`` returns ``(url, stop)``: a SQLAlchemy plain URL
``postgresql://postgres@127.0.0.1:<port>/onevoice`` (trust auth, database created)
and a function that stops the server and deletes its files.

* Durability: PostgreSQL's defaults (``fsync``, ``synchronous_commit``, ``full_page_writes`` on), so
  what a benchmark measures and what a crash test proves hold for a real server. ``fast=True`` turns
  the three off: an explicit opt-in for test servers that are never crashed and whose speed is all
  that matters (the session's shared server); never for benchmarks.
* ``start_cluster()`` gives a ``PostgresCluster`` that can also be crashed and restarted
  (``restart()``: an immediate stop, i.e. no checkpoint, then a start that replays the WAL).
* ``ONEVOICE_TEST_DATABASE_URL`` set: that server is used as is, ``stop`` does nothing.
* Otherwise ``initdb``/``pg_ctl`` are looked up under ``/usr/lib/postgresql/*/bin``
  (Debian keeps them off PATH), then on PATH. PostgreSQL refuses to run as root, so
  as root the cluster runs as the ``postgres`` user (created when missing; like ``runuser -u postgres``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ENV_URL = "ONEVOICE_TEST_DATABASE_URL"
DB_NAME = "onevoice"
PG_USER = "postgres"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries, or the throwaway cluster did not start."""


def find_pg_bin() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl`` (newest major version first)."""

    def major(path: str) -> float:
        try:
            return float(Path(path).parent.parent.name)
        except ValueError:
            return 0.0

    for initdb in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=major, reverse=True):
        bindir = Path(initdb).parent
        if (bindir / "pg_ctl").exists():
            return bindir
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin or on PATH. "
        "Run the tests through `scripts/test`, which installs PostgreSQL (apt-get install postgresql) when "
        f"missing, or point {ENV_URL} at an existing server (postgresql://user@host:port/db)."
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(PG_USER)


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged user to run the server binaries as (None: ourselves, when not root)."""
    return _ensure_user() if os.geteuid() == 0 else None


def _pg(user: pwd.struct_passwd | None, cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL binary, dropping root to ``user`` (what ``runuser -u postgres --`` does)."""
    kwargs: dict = {}
    if user is not None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(HOME=str(cwd), USER=user.pw_name, LOGNAME=user.pw_name)
        kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [], "env": env}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kwargs)


def _run(user: pwd.struct_passwd | None, cmd: list[str], cwd: Path, what: str, log: Path | None = None) -> None:
    proc = _pg(user, cmd, cwd)
    if proc.returncode != 0:
        extra = ""
        if log is not None and log.exists():
            extra = "\n--- server log:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise PostgresUnavailable(f"{what} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}{extra}")


def _create_database(port: int, deadline: float) -> None:
    import psycopg

    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(
                host="127.0.0.1", port=port, user=PG_USER, dbname="postgres", autocommit=True, connect_timeout=5
            ) as conn:
                conn.execute(f'CREATE DATABASE "{DB_NAME}"')
                return
        except psycopg.OperationalError as exc:  # server still coming up
            last = exc
            time.sleep(0.2)
    raise PostgresUnavailable(f"could not create database {DB_NAME!r} on 127.0.0.1:{port}: {last}")


FAST_OPTIONS = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


@dataclass
class PostgresCluster:
    """A throwaway cluster of our own: its URL, and how to stop, crash or restart it."""

    url: str
    port: int
    fast: bool
    _bindir: Path
    _data: Path
    _log: Path
    _base: Path
    _options: str
    _user: pwd.struct_passwd | None

    def _ctl(self, *args: str, what: str) -> None:
        _run(self._user, [str(self._bindir / "pg_ctl"), "-D", str(self._data), *args], self._base, what, self._log)

    def restart(self, mode: str = "immediate", timeout: float = 60.0) -> float:
        """Stop the server (``immediate``: as if it crashed; its clients lose their connections and any open
        transaction) and start it again; returns the seconds it was away."""
        began = time.monotonic()
        self._ctl("-m", mode, "-w", "-t", str(int(timeout)), "stop", what=f"pg_ctl stop -m {mode}")
        self._ctl("-l", str(self._log), "-o", self._options, "-w", "-t", str(int(timeout)), "start",
                  what="pg_ctl start")
        return time.monotonic() - began

    def stop(self) -> None:
        _pg(self._user, [str(self._bindir / "pg_ctl"), "-D", str(self._data), "-m", "fast", "-w", "-t", "30", "stop"],
            self._base)
        shutil.rmtree(self._base, ignore_errors=True)


def start_cluster(timeout: float = 60.0, *, fast: bool = False) -> PostgresCluster:
    """Start a throwaway cluster (PostgreSQL's default durability unless ``fast``), whatever
    ``$ONEVOICE_TEST_DATABASE_URL`` says."""
    bindir = find_pg_bin()
    user = _run_as()
    base = Path(tempfile.mkdtemp(prefix="onevoice-pg-"))
    base.chmod(0o700)
    if user is not None:
        os.chown(base, user.pw_uid, user.pw_gid)
    data, log = base / "data", base / "server.log"
    try:
        _run(
            user,
            [str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "-A", "trust", "-E", "UTF8",
             "--no-locale", "--no-sync"],  # (only initdb's own final sync of the new files)
            base,
            "initdb",
        )
        port, options = 0, ""
        for attempt in range(3):  # a free port can be taken between probing and binding
            port = _free_port()
            options = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={base} "
                       f"-c max_connections=200{' ' + FAST_OPTIONS if fast else ''}")
            try:
                _run(
                    user,
                    [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t",
                     str(int(timeout)), "start"],
                    base,
                    "pg_ctl start",
                    log,
                )
                break
            except PostgresUnavailable:
                if attempt == 2:
                    raise
        _create_database(port, time.monotonic() + timeout)
    except BaseException:
        _pg(user, [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], base)
        shutil.rmtree(base, ignore_errors=True)
        raise
    return PostgresCluster(f"postgresql://{PG_USER}@127.0.0.1:{port}/{DB_NAME}", port, fast, bindir, data, log, base,
                           options, user)


def durability(url: str) -> dict[str, str]:
    """The server's fsync, synchronous_commit and full_page_writes settings (what a benchmark ran on)."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    with psycopg.connect(host=u.host, port=u.port, user=u.username, dbname=u.database, password=u.password,
                         connect_timeout=10) as conn:
        return {name: conn.execute(f"SHOW {name}").fetchone()[0]
                for name in ("fsync", "synchronous_commit", "full_page_writes")}


def start_postgres(timeout: float = 60.0, *, fast: bool = False) -> tuple[str, Callable[[], None]]:
    """Start a throwaway cluster (or use ``$ONEVOICE_TEST_DATABASE_URL``); return ``(url, stop)``.

    ``fast=True`` runs the cluster without durability (see the module docstring): only for test servers
    that are never crashed."""
    existing = os.environ.get(ENV_URL)
    if existing:
        return existing, lambda: None
    cluster = start_cluster(timeout, fast=fast)
    if not fast:
        try:
            recycle_wal(cluster.url)
        except BaseException:
            cluster.stop()
            raise
    return cluster.url, cluster.stop


WARM_WAL_ROWS = 900_000  # of ~1 KB: about 60 WAL segments of 16 MB, what max_wal_size (1 GB) lets a checkpoint keep


def recycle_wal(url: str) -> None:
    """Give a new durable cluster the recycled WAL segments a server has once it ran past a checkpoint.

    A new cluster has one WAL segment; every further 16 MB of WAL is a new file that the backend
    writing it zero-fills and syncs while the committing transactions wait (`wal_init_zero`). At
    1,000 events/s that is a 50 ms commit every 3.3 s, which no server running for more than its
    first checkpoint has: a checkpoint renames the segments it no longer needs for reuse. So write
    about 1 GB of WAL once and checkpoint; the settings (fsync, synchronous_commit,
    full_page_writes, wal_init_zero) stay the server's defaults. Takes 2-3 s.
    """
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    with psycopg.connect(host=u.host, port=u.port, user=u.username, dbname=u.database, password=u.password,
                         connect_timeout=10, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE onevoice_wal_warmup AS SELECT g, repeat('x', 1000) AS pad "
                     f"FROM generate_series(1, {WARM_WAL_ROWS}) AS g")
        conn.execute("DROP TABLE onevoice_wal_warmup")
        conn.execute("CHECKPOINT")

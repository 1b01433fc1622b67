"""A throwaway PostgreSQL cluster for one test session.

``start_postgres()`` returns ``(url, stop)``: a SQLAlchemy plain URL
``postgresql://postgres@127.0.0.1:<port>/onevoice`` (trust auth, database created)
and a function that stops the server and deletes its files.

* ``ONEVOICE_TEST_DATABASE_URL`` set: that server is used as is, ``stop`` does nothing.
* Otherwise ``initdb``/``pg_ctl`` are looked up under ``/usr/lib/postgresql/*/bin``
  (Debian keeps them off PATH), then on PATH. PostgreSQL refuses to run as root, so
  as root the cluster runs as the ``postgres`` user (created when missing) via ``runuser``.
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
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(PG_USER)


def _runner() -> tuple[list[str], pwd.struct_passwd | None]:
    """Command prefix to run server binaries unprivileged, and the user they run as (None: ourselves)."""
    if os.geteuid() != 0:
        return [], None
    user = _ensure_user()
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", PG_USER, "--"], user
    return ["su", PG_USER, "-s", "/bin/sh", "-c", '"$0" "$@"'], user  # fallback without util-linux runuser


def _run(prefix: list[str], cmd: list[str], cwd: Path, what: str, log: Path | None = None) -> None:
    proc = subprocess.run(prefix + cmd, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
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


def start_postgres(timeout: float = 60.0) -> tuple[str, Callable[[], None]]:
    """Start a throwaway cluster (or use ``$ONEVOICE_TEST_DATABASE_URL``); return ``(url, stop)``."""
    existing = os.environ.get(ENV_URL)
    if existing:
        return existing, lambda: None

    bindir = find_pg_bin()
    prefix, user = _runner()
    base = Path(tempfile.mkdtemp(prefix="onevoice-pg-"))
    base.chmod(0o700)
    if user is not None:
        os.chown(base, user.pw_uid, user.pw_gid)
    data, log = base / "data", base / "server.log"

    def cleanup() -> None:
        shutil.rmtree(base, ignore_errors=True)

    try:
        _run(
            prefix,
            [str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "-A", "trust", "-E", "UTF8",
             "--no-locale", "--no-sync"],
            base,
            "initdb",
        )
        port = 0
        for attempt in range(3):  # a free port can be taken between probing and binding
            port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={base} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            try:
                _run(
                    prefix,
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
        subprocess.run(
            prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            cwd=base, capture_output=True, stdin=subprocess.DEVNULL,
        )
        cleanup()
        raise

    def stop() -> None:
        subprocess.run(
            prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop"],
            cwd=base, capture_output=True, stdin=subprocess.DEVNULL,
        )
        cleanup()

    return f"postgresql://{PG_USER}@127.0.0.1:{port}/{DB_NAME}", stop

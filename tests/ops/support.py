"""Helpers of the operations tests: a PostgreSQL that can be stopped and started again, HTTP probes,
events from a bundled scenario, and the environment of an `onevoice run` subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.kafka import send_messages
from tests.support.postgres import _free_port, _pg, _run, _run_as, find_pg_bin

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 4.0) -> tuple[int, str]:
    """(status, body) of a GET; connection failures are (0, reason)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll until `predicate()` is truthy; returns (its value, seconds it took)."""
    began = time.monotonic()
    while True:
        value = predicate()
        if value:
            return value, time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(interval)


def service_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONEVOICE_") or k == "ONEVOICE_CACHE_DIR"}
    env.update({f"ONEVOICE_{k.upper()}": str(v) for k, v in settings.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def scenario_messages(name: str, prefix: str) -> list[tuple[str, bytes | None, bytes]]:
    """The `publish` messages of a bundled scenario, with ids and account ids made unique by `prefix`."""
    from services.scenarios import bundled_scenarios, message_bytes

    scenario = next(s for s in bundled_scenarios() if s["name"] == name)
    text = json.dumps([entry for step in scenario["steps"] for entry in step.get("publish", [])])
    for word in ("ACME", f"{name}-e"):
        text = text.replace(word, f"{prefix}-{word}")
    return [message_bytes(entry) for entry in json.loads(text)]


def publish(bootstrap: str, messages) -> None:
    asyncio.run(send_messages(bootstrap, messages))


class StoppablePostgres:
    """A PostgreSQL cluster of one test, stopped and started again on the same port (tests/support/postgres.py
    gives the session's, which other tests need running)."""

    def __init__(self, password: str | None = None):
        self.password = password  # set: logins need it (scram-sha-256); else anyone is trusted
        self.bindir = find_pg_bin()
        self.user = _run_as()
        self.base = Path(tempfile.mkdtemp(prefix="onevoice-ops-pg-"))
        self.base.chmod(0o700)
        if self.user is not None:
            os.chown(self.base, self.user.pw_uid, self.user.pw_gid)
        self.data, self.log = self.base / "data", self.base / "server.log"
        self.port = _free_port()
        auth = ["-A", "trust"]
        if password:
            pwfile = self.base / "pw"
            pwfile.write_text(password + "\n")
            if self.user is not None:
                os.chown(pwfile, self.user.pw_uid, self.user.pw_gid)
            auth = ["-A", "scram-sha-256", f"--pwfile={pwfile}"]
        _run(self.user, [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", *auth, "-E",
                         "UTF8", "--no-locale", "--no-sync"], self.base, "initdb")
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.base} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        _run(self.user, [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                         "-w", "-t", "60", "start"], self.base, "pg_ctl start", self.log)

    def stop(self) -> None:
        _pg(self.user, [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop"],
            self.base)

    def destroy(self) -> None:
        _pg(self.user, [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"], self.base)
        import shutil

        shutil.rmtree(self.base, ignore_errors=True)

"""What the fault suite needs: a broker and a PostgreSQL it may stop, a fixed workload, and measurements.

* `ControlledPostgres`: a throwaway cluster (tests/support/postgres.py's binaries and user) on a
  fixed port, stopped and started again on request; the URL carries a password (trust auth
  ignores it), so that the log scan has one to look for.
* The workload's outputs do not depend on the order in which topics are read: dunnings and
  stock shortages of accounts no event makes known (every dunning yields one `proceed`
  instruction, every shortage one `allocate`), plus unusable messages (dead letters). Whatever
  the faults, a run must publish exactly what a clean run publishes.
* `cpu_seconds(pid)`: user+system time from /proc/<pid>/stat.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections import Counter
from pathlib import Path

from tests.support.postgres import DB_NAME, PG_USER, _pg, _run, _run_as, find_pg_bin

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14, 15 of stat)


class ControlledPostgres:
    def __init__(self, password: str):
        self.bindir = find_pg_bin()
        self.user = _run_as()
        self.base = Path(tempfile.mkdtemp(prefix="onevoice-faults-pg-"))
        self.base.chmod(0o700)
        if self.user is not None:
            os.chown(self.base, self.user.pw_uid, self.user.pw_gid)
        self.data, self.log = self.base / "data", self.base / "server.log"
        self.port = free_port()
        self.password = password
        _run(self.user, [str(self.bindir / "initdb"), "-D", str(self.data), "-U", PG_USER, "-A", "trust", "-E",
                         "UTF8", "--no-locale", "--no-sync"], self.base, "initdb")
        self.start()
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=PG_USER, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')

    def url(self, database: str = DB_NAME) -> str:
        return f"postgresql://{PG_USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.base} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        _run(self.user, [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                         "-w", "-t", "60", "start"], self.base, "pg_ctl start", self.log)

    def stop(self) -> None:
        _pg(self.user, [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop"],
            self.base)

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=PG_USER, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        _pg(self.user, [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"], self.base)
        shutil.rmtree(self.base, ignore_errors=True)


# -- the workload -----------------------------------------------------------------------------


def _event(prefix: str, kind: str, n: int, data: dict) -> dict:
    return {"specversion": "1.0", "id": f"{prefix}-{kind}-{n}", "source": "faults/test",
            "type": kind, "time": f"2027-03-01T00:{n // 60 % 60:02d}:{n % 60:02d}Z", "data": data}


def workload(prefix: str, dunnings: int = 160, shortages: int = 20, big_orders: int = 0,
             junk: int = 6) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value) messages whose outputs are independent of the reading order.

    `big_orders`: every fourth shortage lists that many orders (a large `allocate` instruction).
    """
    out = []
    for n in range(dunnings):
        account = f"{prefix}-acct-{n % 37}"
        out.append(("finance.dunning", account.encode(), json.dumps(_event(prefix, "dunning.triggered", n, {
            "dunning_id": f"{prefix}-dun-{n}", "account_id": account, "invoice_id": f"{prefix}-inv-{n}",
            "level": 1 + n % 4, "amount": f"{100 + n}.00", "currency": "EUR", "due_date": "2027-02-15",
            "proposed_action": ("reminder", "delivery_block", "collection")[n % 3]})).encode()))
    for n in range(shortages):
        item = f"{prefix}-item-{n}"
        count = big_orders if big_orders and n % 4 == 0 else 3
        orders = [{"order_id": f"{prefix}-o-{n}-{k}", "account_id": f"{prefix}-acct-{k % 37}", "qty": 5,
                   "ordered_at": f"2027-02-{1 + k % 27:02d}T08:00:00Z"} for k in range(count)]
        out.append(("erp.stock", item.encode(), json.dumps(_event(prefix, "stock.shortage", n, {
            "item_id": item, "available_qty": 4, "orders": orders})).encode()))
    for n in range(junk):
        out.append(("erp.agreements", f"{prefix}-junk-{n}".encode(), b"{not json"))
    return out


def output_keys(outputs: dict[str, list[dict]], prefix: str) -> Counter:
    """Every published output of this workload as a comparable key (a multiset: doubles count twice)."""
    keys: Counter = Counter()
    for message in outputs.get("kam.instructions", []):
        if message.get("ref_id", "").startswith(prefix):
            keys[("instruction", message["ref_id"], message["action"])] += 1
    for message in outputs.get("kam.alerts", []):
        if message.get("caused_by", "").startswith("faults/test/" + prefix):
            keys[("alert", message["alert_id"], message["status"])] += 1
    for message in outputs.get("kam.dlq", []):
        if (message.get("key") or "").startswith(prefix):
            keys[("dead_letter", message["topic"], message["key"], message["error"]["code"])] += 1
    return keys


def log_lines_between(path: Path, start: int, end: int | None = None) -> list[str]:
    """The lines of a log file written between two byte offsets."""
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read() if end is None else fh.read(max(0, end - start))
    return [line for line in data.decode(errors="replace").splitlines() if line.strip()]


def wait_for(condition, timeout: float, interval: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

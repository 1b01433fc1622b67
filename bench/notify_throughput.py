"""Notifications delivered per second by `onevoice notify` to a local SMTP sink.

N alert messages (each for one person with an address) are published to a private topic first;
then one `onevoice notify` subprocess (the real command, its own consumer group) records and
sends them to an aiosmtpd sink in this process that only counts what it receives. Reported:
seconds from start to the last mail, and the steady rate between the 10th and the 90th percentile
mail (start-up and group join excluded). Stores: SQLite (file) and PostgreSQL (throwaway cluster).

    uv run python bench/notify_throughput.py [-n 3000] [--workers 2] [--skip-sqlite] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiosmtpd.controller import Controller  # noqa: E402

from bench._harness import broker, free_port, postgres, publish, unique  # noqa: E402
from services.store import tables as t  # noqa: E402
from services.store.db import create_tables, make_engine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class Sink:
    """Counts accepted messages and when each arrived; parses nothing."""

    def __init__(self):
        self.times: list[float] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.times.append(time.perf_counter())
        return "250 OK"


def seed(database_url: str, people: int) -> None:
    engine = make_engine(database_url)
    create_tables(engine)
    with engine.begin() as conn:
        conn.execute(t.accounts.insert().values(account_id="KA", name="Kappa AG", country="DE", tier="key", root_id="KA",
                                                event_time="2027-01-01T00:00:00Z", event_id="e0"))
        conn.execute(t.team_members.insert(), [
            {"account_id": "KA", "person_id": f"p-{i}", "role": "local_kam", "name": f"Person {i}",
             "email": f"p-{i}@example.test", "present": True, "country": "IT", "event_time": "2027-01-01T00:00:00Z",
             "event_id": f"e{i + 1}"} for i in range(people)])
    engine.dispose()


def alerts(n: int, people: int, prefix: str) -> list[tuple[str, bytes, bytes]]:
    out = []
    for i in range(n):
        person = f"p-{i % people}"
        message = {"alert_id": f"{prefix}-{i}", "fingerprint": f"f{i}", "rule": "local_price_below_global",
                   "severity": "high", "status": "open", "key_account_id": "KA", "account_id": "KA-IT",
                   "title": f"Local price below global (P-{i}, IT)", "detail": f"IT price for P-{i} is 6 % below global",
                   "evidence": [f"G-{i}", f"L-{i}"], "assignee": person, "recipients": [person], "due_at": None,
                   "caused_by": "erp/bench", "created_at": "2027-01-01T00:00:00Z",
                   "updated_at": "2027-01-01T00:00:00Z", "data": {"gap_pct": "6.00"}}
        out.append((f"{prefix}.alerts", person.encode(), json.dumps(message).encode()))
    return out


def run_once(label: str, database_url: str, bootstrap: str, n: int, workers: int) -> dict:
    prefix = unique("bench-notify-")
    seed(database_url, people=50)
    asyncio.run(publish(bootstrap, alerts(n, 50, prefix)))
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONEVOICE_")}
    env.update(ONEVOICE_DATABASE_URL=database_url, ONEVOICE_KAFKA_BOOTSTRAP=bootstrap,
               ONEVOICE_NOTIFY_GROUP_ID=f"{prefix}-notify", ONEVOICE_NOTIFY_ALERTS_TOPIC=f"{prefix}.alerts",
               ONEVOICE_NOTIFY_NOTICES_TOPIC=f"{prefix}.notices", ONEVOICE_SMTP_URL=f"smtp://127.0.0.1:{port}",
               ONEVOICE_SMTP_FROM="onevoice <alerts@corp.example>", ONEVOICE_NOTIFY_WORKERS=str(workers))
    log = open(Path(tempfile.gettempdir()) / f"{prefix}.log", "wb")
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "consumers.cli", "notify"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = started + 600
        while len(sink.times) < n:
            if time.perf_counter() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{label}: only {len(sink.times)} of {n} mails (log: {log.name})")
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(60)
        controller.stop()
        log.close()
    times = sorted(sink.times)
    lo, hi = times[n // 10], times[(9 * n) // 10]
    return {"store": label, "mails": len(times), "total_s": times[-1] - started, "first_s": times[0] - started,
            "steady_per_s": (9 * n // 10 - n // 10) / (hi - lo), "overall_per_s": n / (times[-1] - started)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=3000, help="alert messages (one e-mail each)")
    parser.add_argument("--workers", type=int, default=2, help="ONEVOICE_NOTIFY_WORKERS (SMTP connections)")
    parser.add_argument("--bootstrap", help="use this Kafka instead of starting one")
    parser.add_argument("--database-url", help="PostgreSQL to use (its onevoice tables are DROPPED first)")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    results = []
    with broker(args.bootstrap) as bootstrap:
        if not args.skip_sqlite:
            with tempfile.TemporaryDirectory() as tmp:
                results.append(run_once("SQLite", f"sqlite:///{tmp}/notify.db", bootstrap, args.n, args.workers))
        if not args.skip_postgres:
            with postgres(args.database_url) as url:
                results.append(run_once("PostgreSQL", url, bootstrap, args.n, args.workers))
    print(f"machine: {platform.node()} · {os.cpu_count()} cores · Python {platform.python_version()} · "
          f"n={args.n} · workers={args.workers}")
    print(f"{'store':<11} {'mails':>6} {'start→first mail s':>19} {'start→last mail s':>18} {'overall /s':>11} "
          f"{'steady /s (p10→p90)':>20}")
    for r in results:
        print(f"{r['store']:<11} {r['mails']:>6} {r['first_s']:>19.1f} {r['total_s']:>18.1f} {r['overall_per_s']:>11.0f} "
              f"{r['steady_per_s']:>20.0f}")


if __name__ == "__main__":
    main()

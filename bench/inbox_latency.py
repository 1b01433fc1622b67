"""Inbox latency: My inbox and the alert detail with 100,000 alerts of 2,000 key accounts in PostgreSQL.

Fills a PostgreSQL store (default durability: fsync and synchronous_commit on — its own throwaway
cluster, unless --database-url names one) with key accounts, teams, agreements, alerts with
history, and notices; serves it with `onevoice web` (a real uvicorn process) and times, over HTTP
from a client on the same machine, sequential requests as signed-in KAMs:

  inbox API    GET /api/v1/alerts?involving=me&status=open,acknowledged,escalated   (My inbox's query)
  inbox page   GET /                                                                 (My inbox, HTML)
  detail API   GET /api/v1/alerts/{id}                                               (history, evidence, team)
  detail page  GET /alerts/{id}
  all alerts   GET /api/v1/alerts?limit=50 as an admin (the whole store by urgency)

    uv run --frozen python bench/inbox_latency.py [--alerts 100000] [--key-accounts 2000] [--requests 300]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import text  # noqa: E402

from services.store import tables as t  # noqa: E402
from services.store.db import create_tables, make_engine  # noqa: E402
from services.web.tokens import create_token  # noqa: E402

RULES = [("key_account_dunning", "high"), ("local_price_below_global", "medium"), ("duplicate_global_contract", "critical"),
         ("contradicting_service_terms", "high"), ("unauthorized_commitment", "medium"),
         ("scarce_stock_allocation", "low"), ("key_account_dunning", "low")]
STATUSES = ["open"] * 3 + ["acknowledged", "escalated"] + ["resolved"] * 4 + ["waived"]
PER_KAM = 5  # key accounts per global KAM


@contextlib.contextmanager
def durable_postgres(url: str | None):
    """A throwaway cluster with PostgreSQL's default durability (unlike the test cluster, which turns fsync off)."""
    if url:
        yield url
        return
    from tests.support import postgres as pg

    bindir, user = pg.find_pg_bin(), pg._run_as()
    base = Path(tempfile.mkdtemp(prefix="onevoice-bench-pg-"))
    base.chmod(0o700)
    if user is not None:
        os.chown(base, user.pw_uid, user.pw_gid)
    data, log = base / "data", base / "server.log"
    pg._run(user, [str(bindir / "initdb"), "-D", str(data), "-U", pg.PG_USER, "-A", "trust", "-E", "UTF8",
                   "--no-locale"], base, "initdb")
    port = pg._free_port()
    pg._run(user, [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o",
                   f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={base}", "-w", "start"],
            base, "pg_ctl start", log)
    try:
        pg._create_database(port, time.monotonic() + 60)
        yield f"postgresql://{pg.PG_USER}@127.0.0.1:{port}/{pg.DB_NAME}"
    finally:
        pg._pg(user, [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], base)
        shutil.rmtree(base, ignore_errors=True)


def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fill(engine, key_accounts: int, alerts: int, seed: int = 7) -> dict:
    """Key accounts with two subsidiaries and a team each, agreements, alerts with history, notices."""
    rnd = random.Random(seed)
    now = datetime.now(timezone.utc)
    kams = max(1, key_accounts // PER_KAM)
    accounts, team, agreements, alert_rows, history, notices = [], [], [], [], [], []
    for k in range(key_accounts):
        root = f"KA-{k:05d}"
        stamp = {"event_time": "2027-01-01T00:00:00Z", "event_id": f"e-{root}"}
        accounts.append(dict(account_id=root, name=f"Key Account {k}", parent_id=None, country="DE", tier="key",
                             root_id=root, **stamp))
        for country in ("IT", "FR"):
            accounts.append(dict(account_id=f"{root}-{country}", name=f"Key Account {k} {country}", parent_id=root,
                                 country=country, tier="none", root_id=root, **stamp))
        for person, role, country in ((f"p-g{k // PER_KAM:04d}", "global_kam", "DE"),
                                      (f"p-l{k // 2:05d}", "local_kam", "IT"), (f"p-f{k // 10:04d}", "finance", "DE"),
                                      (f"p-s{k // 20:04d}", "senior_kam", "DE")):
            team.append(dict(account_id=root, person_id=person, role=role, country=country,
                             name=f"Person {person}", email=None, present=True, **stamp))
        for n in range(10):
            agreements.append(dict(agreement_id=f"AG-{k:05d}-{n}", version=1, kind="price", account_id=root if n < 5
                                   else f"{root}-IT", agreed_by=f"p-g{k // PER_KAM:04d}", valid_from="2027-01-01",
                                   valid_to=None, scope="global" if n < 5 else "local", country=None if n < 5 else "IT",
                                   product_id=f"P-{n % 5}", price=f"{100 + n}.00", currency="EUR"))
    for a in range(alerts):
        k = rnd.randrange(key_accounts)
        root = f"KA-{k:05d}"
        rule, severity = rnd.choice(RULES)
        status = rnd.choice(STATUSES)
        created = now - timedelta(minutes=rnd.randrange(60 * 24 * 90))
        assignee = f"p-l{k // 2:05d}" if rule == "key_account_dunning" else f"p-g{k // PER_KAM:04d}"
        recipients = sorted({assignee, f"p-f{k // 10:04d}"})
        evidence = [f"D-{a}"] if rule == "key_account_dunning" else [f"AG-{k:05d}-0", f"AG-{k:05d}-7"]
        alert_id = f"alert-{a:07d}"
        due = iso(created + timedelta(hours=48)) if severity in ("high", "critical") else None
        data = ({"dunning_id": evidence[0], "invoice_id": f"I-{a}", "level": 2, "amount": "1200.00", "currency": "EUR",
                 "due_date": "2027-02-01", "proposed_action": "delivery_block", "instruction": "hold"}
                if rule == "key_account_dunning" else {"product_id": "P-0"})
        alert_rows.append(dict(
            alert_id=alert_id, fingerprint=f"{rule}:{root}:{'|'.join(evidence)}:{a}", rule=rule, severity=severity,
            status=status, key_account_id=root, account_id=f"{root}-IT", title=f"{rule} at Key Account {k}",
            detail="generated", evidence=json.dumps(evidence), assignee=assignee, recipients=json.dumps(recipients),
            due_at=due, caused_by=f"bench/e-{a}", created_at=iso(created), updated_at=iso(created),
            data=json.dumps(data), versions="", closed_by_decision=status in ("resolved", "waived"),
            escalated=status == "escalated", awaiting_decision=rule == "key_account_dunning" and status == "open",
            ref_id=evidence[0] if rule == "key_account_dunning" else None))
        history.append(dict(alert_id=alert_id, status="open", assignee=assignee, caused_by=f"bench/e-{a}",
                            decided_by=None, comment=None, at=iso(created)))
        if status != "open":
            history.append(dict(alert_id=alert_id, status=status, assignee=assignee, caused_by=f"bench/d-{a}",
                                decided_by=assignee if status != "escalated" else None, comment="ok",
                                at=iso(created + timedelta(hours=3))))
    for n in range(key_accounts * 3):
        k = n % key_accounts
        notices.append(dict(notice_id=f"notice-{n:06d}", kind="commitment_made", key_account_id=f"KA-{k:05d}",
                            account_id=f"KA-{k:05d}-IT", about=f"AG-{k:05d}-7",
                            recipients=json.dumps([f"p-g{k // PER_KAM:04d}"]), title="Local price agreed",
                            detail="generated", caused_by=f"bench/n-{n}", created_at=iso(now - timedelta(hours=n % 500))))
    with engine.begin() as conn:
        for table, rows in ((t.accounts, accounts), (t.team_members, team), (t.agreements, agreements),
                            (t.alerts, alert_rows), (t.alert_history, history), (t.notices, notices)):
            for start in range(0, len(rows), 5000):
                conn.execute(table.insert(), rows[start:start + 5000])
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    return {"kams": [f"p-g{i:04d}" for i in range(kams)], "alerts": [r["alert_id"] for r in alert_rows],
            "history": len(history), "notices": len(notices), "agreements": len(agreements)}


def time_store(engine, people: list[str], mine: dict, rnd: random.Random, n: int) -> dict:
    """The store's part alone (the queries and their Python, in this process): inbox list and alert detail."""
    from services.web import queries, views

    def viewer(p):
        with engine.connect() as conn:
            return queries.Viewer(p, False, frozenset(queries.memberships(conn, p)))

    viewers = {p: viewer(p) for p in people}
    inbox = queries.AlertFilter(statuses=("open", "acknowledged", "escalated"), involving="")
    out = {}
    for name, work in (
            ("inbox query", lambda p, conn: queries.list_alerts(
                conn, viewers[p], queries.AlertFilter(statuses=inbox.statuses, involving=p), limit=50)),
            ("detail query", lambda p, conn: views.alert_detail(conn, viewers[p], rnd.choice(mine[p])))):
        ms = []
        for i in range(n + 30):
            p = rnd.choice(people)
            began = time.perf_counter()
            with queries.snapshot(engine) as conn:
                work(p, conn)
            if i >= 30:
                ms.append((time.perf_counter() - began) * 1000)
        out[name] = summary(ms)
    with engine.connect() as conn:
        p = people[0]  # the plan of My inbox's statement for one KAM
        stmt = (f"EXPLAIN SELECT alert_id FROM alerts WHERE (assignee = '{p}' OR key_account_id IN "
                f"({', '.join(repr(k) for k in sorted(viewers[p].key_accounts))})) AND status IN "
                f"('open','acknowledged','escalated') AND (assignee = '{p}' OR recipients LIKE '%\"{p}\"%') "
                f"ORDER BY {queries.URGENCY_RANK.name}, {queries.URGENCY_TIME.name}, alert_id LIMIT 51")
        out["inbox plan"] = [r[0] for r in conn.execute(text(stmt))]
    return out


def start_web(database_url: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "ONEVOICE_DATABASE_URL": database_url, "ONEVOICE_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    proc = subprocess.Popen([sys.executable, "-m", "consumers.cli", "web", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("onevoice web did not start")


def timed(client: httpx.Client, requests: list[tuple[str, dict]]) -> list[float]:
    out = []
    for url, headers in requests:
        began = time.perf_counter()
        response = client.get(url, headers=headers)
        out.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, (url, response.status_code, response.text[:200])
    return out


def summary(ms: list[float]) -> dict:
    ordered = sorted(ms)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(ms), "p50": round(statistics.median(ms), 1), "p95": round(pick(0.95), 1),
            "p99": round(pick(0.99), 1), "max": round(max(ms), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--key-accounts", type=int, default=2_000)
    parser.add_argument("--requests", type=int, default=300, help="timed requests per kind (after 30 warm-up)")
    parser.add_argument("--database-url", help="an existing, empty PostgreSQL database (default: a throwaway cluster)")
    args = parser.parse_args()
    rnd = random.Random(11)
    with durable_postgres(args.database_url) as url:
        engine = make_engine(url)
        create_tables(engine)
        with engine.connect() as conn:
            settings = {name: conn.execute(text(f"SHOW {name}")).scalar()
                        for name in ("fsync", "synchronous_commit", "full_page_writes", "server_version")}
        began = time.monotonic()
        facts = fill(engine, args.key_accounts, args.alerts)
        fill_s = time.monotonic() - began
        people = rnd.sample(facts["kams"], min(20, len(facts["kams"])))
        tokens = {p: create_token(engine, p)[1] for p in people}
        admin = create_token(engine, "bench-admin", admin=True)[1]
        with engine.connect() as conn:
            mine = {p: [r[0] for r in conn.execute(text("SELECT alert_id FROM alerts WHERE assignee = :p"), {"p": p})]
                    for p in people}
        store_ms = time_store(engine, people, mine, rnd, args.requests)
        engine.dispose()
        port = 18000 + os.getpid() % 1000
        web = start_web(url, port)
        base = f"http://127.0.0.1:{port}"
        try:
            def auth(p):
                return {"Authorization": f"Bearer {tokens[p]}"}

            kinds = {
                "inbox API": lambda p: (f"{base}/api/v1/alerts?involving=me&status=open,acknowledged,escalated", auth(p)),
                "inbox page": lambda p: (f"{base}/", auth(p)),
                "detail API": lambda p: (f"{base}/api/v1/alerts/{rnd.choice(mine[p])}", auth(p)),
                "detail page": lambda p: (f"{base}/alerts/{rnd.choice(mine[p])}", auth(p)),
                "all alerts (admin)": lambda p: (f"{base}/api/v1/alerts?limit=50", {"Authorization": f"Bearer {admin}"}),
            }
            results = {}
            with httpx.Client(timeout=30) as client:
                inbox_size = len(client.get(kinds["inbox API"](people[0])[0] + "&limit=200",
                                            headers=auth(people[0])).json()["items"])
                for name, make in kinds.items():
                    timed(client, [make(rnd.choice(people)) for _ in range(30)])
                    results[name] = summary(timed(client, [make(rnd.choice(people)) for _ in range(args.requests)]))
        finally:
            web.terminate()
            web.wait(30)
    report = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "machine": f"{platform.node()} "
              f"({os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()})",
              "postgres": settings, "alerts": args.alerts, "key_accounts": args.key_accounts,
              "alert_history_rows": facts["history"], "agreements": facts["agreements"], "notices": facts["notices"],
              "fill_s": round(fill_s, 1), "open_alerts_in_a_sampled_inbox": inbox_size,
              "load_average_1min": round(os.getloadavg()[0], 1), "ms": results, "store_only_ms": store_ms}
    print(json.dumps(report, indent=2))
    worst = max(results[k]["p95"] for k in ("inbox API", "inbox page", "detail API", "detail page"))
    print(f"p95 of the inbox and the alert detail: at most {worst} ms (target < 50 ms)")


if __name__ == "__main__":
    main()

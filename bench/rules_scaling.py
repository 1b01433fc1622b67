"""Per-event cost of rule evaluation with a small vs a large agreement store (PostgreSQL).

The store is bulk-loaded with COPY: key accounts (a root of tier `key` plus one child in
another country), a global KAM per key account, and `--per-key-account` agreements each
(global and local prices, contracts, paid services, none conflicting). The agreement
density per key account is the same for both sizes, so the only thing that grows is
the table: with the right indexes the per-event cost should hardly move (goal <= 1.5x).

Then batches of new `price.agreed` events touching random key accounts are timed through
`Processor.process` (decode, dedup, lock, apply, judge, outbox; one transaction per batch), twice
per store size, each time with a fresh processor (empty per-process caches):

* warm: the events go to a fixed random set of `--touched-key-accounts` (200) key accounts in both
  stores, so after the first batches their state is in the process's cache and a batch fans out to
  as many key accounts whatever the store size;
* cold: the events go to any key account, so in the large store nearly every event meets a key
  account the process has not read yet (what a process restarted on a large store sees).

Without `--database-url` it runs on a throwaway PostgreSQL cluster with the server's default
durability (fsync, synchronous_commit and full_page_writes on), and prints those settings.

    uv run python bench/rules_scaling.py [--sizes 10000,1000000] [--batches 15] [--batch-size 1000]
                                         [--modes warm,cold] [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from services.config import Settings  # noqa: E402
from services.inputs import InputRecord
from services.processor import Processor  # noqa: E402
from services.store.db import create_tables, make_engine  # noqa: E402
from services.store.tables import metadata  # noqa: E402

COUNTRIES = ["DE", "IT", "FR", "ES", "NL", "US", "GB", "PL"]
NOW = datetime(2027, 3, 1, tzinfo=timezone.utc)
STAMP = "2027-01-01T00:00:00Z"


def _copy(conn: psycopg.Connection, table: str, columns: list[str], rows) -> None:
    with conn.cursor() as cur:
        with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def load(url: str, n_agreements: int, per_ka: int) -> int:
    """Truncate and bulk-load `n_agreements` agreements over n/per_ka key accounts; returns the key-account count."""
    n_ka = max(1, n_agreements // per_ka)
    pg = make_url(url)
    with psycopg.connect(host=pg.host, port=pg.port, user=pg.username, dbname=pg.database) as conn:
        conn.execute("TRUNCATE " + ", ".join(t.name for t in metadata.sorted_tables))
        conn.execute("INSERT INTO versions (name, value) VALUES ('teams', 0), ('commits', 0)")  # as the migrations leave it

        def accounts():
            for k in range(n_ka):
                country = COUNTRIES[k % len(COUNTRIES)]
                root = f"KA-{k}"
                yield (root, f"Key account {k}", None, country, "key", root, STAMP, f"a-{k}")
                child_country = COUNTRIES[(k + 1) % len(COUNTRIES)]
                yield (f"{root}-{child_country}", f"Key account {k} {child_country}", root, child_country, "key",
                       root, STAMP, f"a-{k}-c")

        _copy(conn, "accounts", ["account_id", "name", "parent_id", "country", "tier", "root_id", "event_time",
                                 "event_id"], accounts())

        def team():
            for k in range(n_ka):
                yield (f"KA-{k}", f"kam-{k}", "global_kam", COUNTRIES[k % len(COUNTRIES)], f"KAM {k}", None, True,
                       STAMP, f"t-{k}")

        _copy(conn, "team_members", ["account_id", "person_id", "role", "country", "name", "email", "present",
                                     "event_time", "event_id"], team())

        def agreements():
            # Distinct products / services per agreement: nothing conflicts, so the cost measured is the evaluation.
            for i in range(n_agreements):
                k, r = i % n_ka, i // n_ka  # r: the agreement's number within its key account
                kam = f"kam-{k}"
                kind = r % 4
                aid = f"AG-{i}"
                if kind == 0:
                    yield (aid, 1, "price", f"KA-{k}", kam, "2027-01-01", None, "global", None, f"P-{i}",
                           "100.00", "EUR", None, None, None, None)
                elif kind == 1:
                    yield (aid, 1, "price", f"KA-{k}", kam, "2027-01-01", "2027-12-31", "global", None, f"P-{i}",
                           "80.00", "EUR", None, None, None, None)
                elif kind == 2:
                    ctype = ("framework", "supply", "service")[(r // 4) % 3]
                    # one contract of each type per key account is signed, the rest drafts (no duplicates)
                    status = "signed" if r // 4 < 3 else "draft"
                    yield (aid, 1, "contract", f"KA-{k}", kam, "2027-01-01", None, "global", None, None,
                           None, None, ctype, status, None, None)
                else:
                    yield (aid, 1, "service", f"KA-{k}", kam, "2027-01-01", None, None, None, None,
                           "10.00", "EUR", None, None, f"S-{i}", "paid")

        _copy(conn, "agreements", ["agreement_id", "version", "kind", "account_id", "agreed_by", "valid_from",
                                   "valid_to", "scope", "country", "product_id", "price", "currency",
                                   "contract_type", "status", "service_id", "charge"], agreements())
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
    return n_ka


def events(batch_no: int, size: int, pool: list[int], rng: random.Random, tag: str) -> list[InputRecord]:
    """New global prices (fresh products, agreed by the KAM: no alert) for random key accounts of the pool."""
    records = []
    for j in range(size):
        k = rng.choice(pool)
        aid = f"NEW-{tag}-{batch_no}-{j}"
        value = {"specversion": "1.0", "id": aid, "source": "bench/rules", "type": "price.agreed",
                 "time": "2027-02-01T00:00:00Z", "subject": f"KA-{k}",
                 "data": {"agreement_id": aid, "version": 1, "account_id": f"KA-{k}", "scope": "global",
                          "country": None, "product_id": f"PN-{tag}-{batch_no}-{j}", "price": "99.00",
                          "currency": "EUR", "valid_from": "2027-01-01", "valid_to": None, "agreed_by": f"kam-{k}"}}
        records.append(InputRecord("erp.agreements", 0, batch_no * size + j, aid.encode(), json.dumps(value).encode()))
    return records


def measure(url: str, n_ka: int, batches: int, size: int, tag: str, touched: int | None) -> list[float]:
    engine = make_engine(url)
    processor = Processor(engine, Settings(database_url=url), clock=lambda: NOW, instance="bench")
    rng = random.Random(7)
    pool = rng.sample(range(n_ka), min(touched, n_ka)) if touched else list(range(n_ka))
    processor.process(events(-1, size, pool, rng, tag + "w"))  # warm-up: connections, statement cache
    per_event = []
    for b in range(batches):
        records = events(b, size, pool, rng, tag)
        start = time.perf_counter()
        result = processor.process(records)
        elapsed = time.perf_counter() - start
        assert result.processed == size, result
        per_event.append(elapsed / size * 1e6)
    engine.dispose()
    return per_event


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--per-key-account", type=int, default=50)
    parser.add_argument("--batches", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--database-url")
    parser.add_argument("--touched-key-accounts", type=int, default=200,
                        help="warm mode: events go to a fixed random set of this many key accounts in both stores")
    parser.add_argument("--modes", default="warm,cold",
                        help="warm (the touched key accounts stay cached), cold (any key account), or both")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",")]
    assert set(modes) <= {"warm", "cold"}, modes

    stop = lambda: None  # noqa: E731
    url = args.database_url
    if url is None:
        from tests.support.postgres import start_postgres
        url, stop = start_postgres(fast=False)  # benchmarks never run on a server without durability
    try:
        from tests.support.postgres import durability
        print(f"PostgreSQL: {durability(url)}", flush=True)
        create_tables(make_engine(url))
        rows = []
        for n in [int(s) for s in args.sizes.split(",")]:
            t0 = time.perf_counter()
            n_ka = load(url, n, args.per_key_account)
            loaded = time.perf_counter() - t0
            with make_engine(url).connect() as conn:
                check = conn.execute(text("SELECT count(*) FROM agreements")).scalar()
            print(f"loaded {check:,} agreements over {n_ka:,} key accounts in {loaded:.1f} s", flush=True)
            for mode in modes:
                touched = args.touched_key_accounts if mode == "warm" else None
                per_event = measure(url, n_ka, args.batches, args.batch_size, f"s{n}{mode}", touched)
                med = statistics.median(per_event)
                rows.append((mode, n, n_ka, med, min(per_event), max(per_event)))
                print(f"  {n:>9,} agreements, {mode}: median {med:,.0f} µs/event (min {min(per_event):,.0f}, "
                      f"max {max(per_event):,.0f}) over {args.batches} batches of {args.batch_size}", flush=True)
        print()
        print(f"{'mode':>5} {'agreements':>10} {'key accounts':>12} {'µs/event (median)':>18} {'min':>7} {'max':>7} "
              f"{'events/s':>9}")
        for mode, n, n_ka, med, lo, hi in sorted(rows, key=lambda r: (modes.index(r[0]), r[1])):
            print(f"{mode:>5} {n:>10,} {n_ka:>12,} {med:>18,.0f} {lo:>7,.0f} {hi:>7,.0f} {1e6 / med:>9,.0f}")
        for mode in modes:
            mine = sorted((r for r in rows if r[0] == mode), key=lambda r: r[1])
            if len(mine) >= 2:
                ratio = mine[-1][3] / mine[0][3]
                print(f"ratio {mode} {mine[-1][1]:,} / {mine[0][1]:,}: {ratio:.2f}x (goal <= 1.5x) "
                      f"{'OK' if ratio <= 1.5 else 'ABOVE GOAL'}")
    finally:
        stop()


if __name__ == "__main__":
    main()

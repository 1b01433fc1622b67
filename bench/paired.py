"""Paired runs: this tree against an earlier commit, alternating, on PostgreSQL with default durability.

Checks the reference commit out into a temporary git worktree (with this tree's
tests/support/postgres.py, so both run on a durable cluster), then alternates the two trees
`--runs` times, reference first, and prints every run and the medians:

  --mode in-process  `Processor.process` on generated records (bench/workload.py) in batches of
                     2000: 10,000 warm-up events, then three timed chunks of 10,000 (later
                     chunks meet larger key accounts); events/s and Python CPU µs per event;
  --mode e2e         each tree's own `bench/e2e_throughput.py --skip-sqlite` (broker, publish,
                     raw-consume baseline, the service); events/s and the ratio to raw consume;
  --mode latency     each tree's own `bench/latency.py --rate RATE` on PostgreSQL (or, with
                     `--sqlite`, on a fresh SQLite file); p99 ms publish -> instruction received
                     (the medians compared are of p99; lower is better).

    uv run --frozen python bench/paired.py --ref 2f348d6 [--runs 5] [--mode in-process|e2e|latency]
                                           [--rate 1000] [--sqlite]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LATENCY_LINE = re.compile(r"^\s*([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$")  # p50 p95 p99 max mean
E2E_LINE = re.compile(r"^onevoice PostgreSQL\s+([\d.]+)\s+([\d,]+)\s+([\d.]+)\s+([\d,]+)\s+([\d,]+)\s+([\d.]+)\s+(\d+)")


def in_process(tree: str, events: int = 40_000) -> str:
    """Run in a child interpreter with `tree` first on sys.path; prints one line of results."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("durable_postgres", ROOT / "tests" / "support" / "postgres.py")
    postgres = importlib.util.module_from_spec(spec)
    sys.modules["durable_postgres"] = postgres
    spec.loader.exec_module(postgres)
    sys.path[:0] = [f"{tree}/bench", tree]
    from profile_processor import records  # the tree's own workload and processor

    from consumers.service import tune_garbage_collector
    from services.config import Settings
    from services.processor import Processor
    from services.store.db import create_tables, make_engine

    url, stop = postgres.start_postgres()
    try:
        engine = make_engine(url)
        create_tables(engine)
        processor = Processor(engine, Settings(database_url=url))
        recs = records(events, 1, "paired")
        tune_garbage_collector()
        for start in range(0, 10_000, 2000):
            processor.process(recs[start:start + 2000])
        chunks = []
        for first in range(10_000, events, 10_000):
            wall, cpu = time.perf_counter(), time.process_time()
            for start in range(first, first + 10_000, 2000):
                processor.process(recs[start:start + 2000])
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            chunks.append((10_000 / wall, cpu / 10_000 * 1e6))
    finally:
        stop()
    return " ".join(f"{rate:.0f}/{us:.0f}" for rate, us in chunks)


def latency_once(tree: Path, rate: float, sqlite: bool) -> tuple[float, str]:
    """(p99 ms, the run's line) for one run of `tree`'s bench/latency.py."""
    with tempfile.TemporaryDirectory() as tmp:
        store = ["--database-url", f"sqlite:///{tmp}/store.db"] if sqlite else []
        out = subprocess.run([sys.executable, "bench/latency.py", "--rate", str(rate), *store], capture_output=True,
                             text=True, cwd=tree, timeout=1800)
    for line in out.stdout.splitlines():
        if match := LATENCY_LINE.match(line):
            p50, p95, p99, worst, _ = match.groups()
            return float(p99), f"p50 {p50} p95 {p95} p99 {p99} max {worst} ms"
    return float("inf"), f"failed: {out.stdout[-300:]} {out.stderr[-500:]}"


def run_once(tree: Path, mode: str, args=None) -> tuple[float, str]:
    """(events/s, or p99 ms in latency mode, and the run's line) for one run of `tree`."""
    if mode == "latency":
        return latency_once(tree, args.rate, args.sqlite)
    if mode == "in-process":
        out = subprocess.run([sys.executable, __file__, "--child", str(tree)], capture_output=True, text=True,
                             cwd=tree, timeout=1800)
        line = out.stdout.strip().splitlines()[-1] if out.returncode == 0 else f"failed: {out.stderr[-500:]}"
        rates = [float(part.split("/")[0]) for part in line.split()] if out.returncode == 0 else [0.0]
        return statistics.fmean(rates), f"events/s / CPU µs per event by chunk: {line}"
    out = subprocess.run([sys.executable, "bench/e2e_throughput.py", "--skip-sqlite"], capture_output=True,
                         text=True, cwd=tree, timeout=3600)
    for line in out.stdout.splitlines():
        if match := E2E_LINE.match(line):
            return float(match.group(2).replace(",", "")), (f"{match.group(2)} events/s, ratio to raw consume "
                                                            f"{match.group(3)}, {match.group(7)} CPU µs/event")
    return 0.0, f"failed: {out.stdout[-300:]} {out.stderr[-500:]}"


def main(args) -> None:
    base = Path(tempfile.mkdtemp(prefix="onevoice-paired-"))
    reference = base / "reference"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(reference), args.ref], check=True)
    try:
        shutil.copy(ROOT / "tests" / "support" / "postgres.py", reference / "tests" / "support" / "postgres.py")
        results: dict[str, list[float]] = {"reference": [], "this tree": []}
        for run in range(1, args.runs + 1):
            for name, tree in (("reference", reference), ("this tree", ROOT)):
                rate, line = run_once(tree, args.mode, args)
                results[name].append(rate)
                print(f"run {run} {name:<10} {line}", flush=True)
        ref, this = (statistics.median(results[k]) for k in ("reference", "this tree"))
        if args.mode == "latency":
            print(f"median p99 ms (latency at {args.rate:g}/s on {'SQLite' if args.sqlite else 'PostgreSQL'}, "
                  f"{args.runs} paired runs): reference {args.ref} {ref:.1f}, this tree {this:.1f}, ratio {this / ref:.2f}")
            return
        print(f"median events/s ({args.mode}, {args.runs} paired runs): reference {args.ref} {ref:,.0f}, "
              f"this tree {this:,.0f}, ratio {this / ref:.2f}" if ref else "the reference did not run")
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(reference)], check=False)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(in_process(sys.argv[2]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", required=True, help="the commit to compare with (e.g. 2f348d6)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mode", choices=("in-process", "e2e", "latency"), default="in-process")
    parser.add_argument("--rate", type=float, default=1000, help="latency mode: events/s")
    parser.add_argument("--sqlite", action="store_true", help="latency mode: on a fresh SQLite file")
    main(parser.parse_args())

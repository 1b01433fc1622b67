"""Where a batch's time goes, without a profiler: wall time per processor phase, in process (no Kafka).

Runs the workload (bench/workload.py) through `Processor.process` on a throwaway PostgreSQL
cluster (or --sqlite), first `--warm` events in batches of 2000 (master data and warm caches),
then the rest in batches of `--batch`, and prints events/s, the Python process's CPU time per
event and the cumulative wall time of each phase (phases nest: `_prefetch` is inside
`_lock_touched`, `flush` inside several others; `judge_key_accounts` runs once per batch plus once
before each event that touches a key account already changed in the batch), plus the time of the cyclic garbage collector
(with the service's thresholds, `tune_garbage_collector`, unless --default-gc).

    uv run python bench/phase_breakdown.py [-n 50000] [--batch 2000] [--warm 10000] [--sqlite] [--default-gc]
"""

from __future__ import annotations

import argparse
import functools
import gc
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import _harness  # noqa: F401  (puts the repository on sys.path)
from profile_processor import records

from consumers.service import tune_garbage_collector
from services.config import Settings
from services import processor as processor_module
from services.handlers import HANDLERS
from services.processor import Processor
from services.store import state
from services.store.db import create_tables, make_engine

PHASES = {
    Processor: ["_claim", "_lock_touched", "_prefetch", "_write"],
    processor_module: ["judge_key_accounts"],
    state.StateRepository: ["prefetch", "flush", "validate_keys", "key_account_states", "promotions_for",
                            "prefetch_undercut", "teams", "after_commit"],
}


def instrument(totals: dict[str, float], counts: dict[str, int]) -> None:
    for owner, names in PHASES.items():
        for name in names:
            original = getattr(owner, name)

            @functools.wraps(original)
            def timed(*args, _original=original, _name=name, **kwargs):
                began = time.perf_counter()
                counts[_name] += 1
                try:
                    return _original(*args, **kwargs)
                finally:
                    totals[_name] += time.perf_counter() - began

            setattr(owner, name, timed)
    for event_type, handler in list(HANDLERS.items()):  # all handlers as one phase
        HANDLERS[event_type] = _timed_handler(handler, totals, counts)


def _timed_handler(handler, totals, counts):
    def timed(*args):
        began = time.perf_counter()
        counts["handlers"] += 1
        try:
            return handler(*args)
        finally:
            totals["handlers"] += time.perf_counter() - began
    return timed


def _gc_timer():
    """A gc callback that sums the collector's own time (it runs inside whatever allocated)."""
    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            on_gc.began = time.perf_counter()
        else:
            on_gc.seconds += time.perf_counter() - on_gc.began
            on_gc.runs += 1
            on_gc.full += info["generation"] == 2
            on_gc.by_generation[info["generation"]] += time.perf_counter() - on_gc.began
    on_gc.seconds, on_gc.runs, on_gc.full, on_gc.began = 0.0, 0, 0, 0.0
    on_gc.by_generation = [0.0, 0.0, 0.0]
    gc.callbacks.append(on_gc)
    return on_gc


def main(args) -> None:
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    instrument(totals, counts)
    with tempfile.TemporaryDirectory(prefix="onevoice-phases-") as tmp:
        if args.sqlite:
            url, stop = f"sqlite:///{Path(tmp) / 'phases.db'}", (lambda: None)
        else:
            from tests.support.postgres import start_postgres

            url, stop = start_postgres()
        try:
            engine = make_engine(url)
            create_tables(engine)
            processor = Processor(engine, Settings(database_url=url))
            recs = records(args.events, 1, "phases")
            if not args.default_gc:
                tune_garbage_collector()
            for start in range(0, min(args.warm, len(recs)), 2000):
                processor.process(recs[start:min(start + 2000, args.warm)])
            totals.clear()
            counts.clear()
            timed = recs[args.warm:]
            gc_time = _gc_timer()
            wall, cpu = time.perf_counter(), time.process_time()
            for start in range(0, len(timed), args.batch):
                processor.process(timed[start:start + args.batch])
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            gc.callbacks.remove(gc_time)
        finally:
            stop()
    n = len(timed)
    print(f"{n:,} events in batches of {args.batch} ({'SQLite' if args.sqlite else 'PostgreSQL'}): "
          f"{n / wall:,.0f} events/s, {wall / n * 1e6:,.0f} µs/event wall, {cpu / n * 1e6:,.0f} µs/event Python CPU")
    print(f"  garbage collector: {gc_time.seconds:.2f} s in {gc_time.runs} runs ({gc_time.seconds / wall:.1%} of wall), "
          f"{gc_time.full} full; seconds by generation {[round(s, 2) for s in gc_time.by_generation]}")
    batches = -(-n // args.batch)
    for name, seconds in sorted(totals.items(), key=lambda item: -item[1]):
        print(f"  {name:<22} {seconds:7.2f} s  {seconds / wall:6.1%}  {counts[name] / batches:8.1f} calls/batch")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--warm", type=int, default=10_000)
    parser.add_argument("--sqlite", action="store_true")
    parser.add_argument("--default-gc", action="store_true",
                        help="keep CPython's collector thresholds instead of the service's (tune_garbage_collector)")
    main(parser.parse_args())

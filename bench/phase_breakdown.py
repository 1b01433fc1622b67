"""Where a batch's time goes, without a profiler: wall time per processor phase, in process (no Kafka).

Runs the workload (bench/workload.py) through `Processor.process` on a throwaway PostgreSQL
cluster (or --sqlite), first `--warm` events in batches of 2000 (master data and warm caches),
then the rest in batches of `--batch`, and prints events/s, the Python process's CPU time per
event and the cumulative wall time of each phase (phases nest: `_prefetch` is inside
`_lock_touched`, `flush` inside several others).

    uv run python bench/phase_breakdown.py [-n 50000] [--batch 2000] [--warm 10000] [--sqlite]
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import _harness  # noqa: F401  (puts the repository on sys.path)
from profile_processor import records

from services.config import Settings
from services.processor import Processor
from services.store import state
from services.store.db import create_tables, make_engine

PHASES = {
    Processor: ["_claim", "_lock_touched", "_prefetch", "_apply_event", "_judge_key_accounts", "_decide", "_write"],
    state.StateRepository: ["prefetch", "flush", "validate_keys", "key_account_states", "promotions_for",
                            "prefetch_undercut", "teams", "after_commit"],
}


def instrument(totals: dict[str, float]) -> None:
    for cls, names in PHASES.items():
        for name in names:
            original = getattr(cls, name)

            @functools.wraps(original)
            def timed(*args, _original=original, _name=name, **kwargs):
                began = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    totals[_name] += time.perf_counter() - began

            setattr(cls, name, timed)


def main(args) -> None:
    totals: dict[str, float] = defaultdict(float)
    instrument(totals)
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
            for start in range(0, min(args.warm, len(recs)), 2000):
                processor.process(recs[start:min(start + 2000, args.warm)])
            totals.clear()
            timed = recs[args.warm:]
            wall, cpu = time.perf_counter(), time.process_time()
            for start in range(0, len(timed), args.batch):
                processor.process(timed[start:start + args.batch])
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        finally:
            stop()
    n = len(timed)
    print(f"{n:,} events in batches of {args.batch} ({'SQLite' if args.sqlite else 'PostgreSQL'}): "
          f"{n / wall:,.0f} events/s, {wall / n * 1e6:,.0f} µs/event wall, {cpu / n * 1e6:,.0f} µs/event Python CPU")
    for name, seconds in sorted(totals.items(), key=lambda item: -item[1]):
        print(f"  {name:<22} {seconds:7.2f} s  {seconds / wall:6.1%}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--warm", type=int, default=10_000)
    parser.add_argument("--sqlite", action="store_true")
    main(parser.parse_args())

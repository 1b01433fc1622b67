"""Where `Processor.process` spends its time: cProfile over generated batches, in process, no Kafka.

The workload (bench/workload.py) is turned into InputRecords up front, then fed to a
Processor on a fresh PostgreSQL (default; or --database-url, or --sqlite) in batches of
`--batch` (the service's max_batch). Prints events/s without the profiler, then the top
functions by own time and by cumulative time with the profiler on.

    uv run python bench/profile_processor.py [-n 20000] [--batch 2000] [--sqlite] [--top 25]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import tempfile
import time
from pathlib import Path

import _harness as h

from services.config import Settings
from services.inputs import InputRecord
from services.processor import Processor
from services.store.db import create_tables, make_engine
from workload import generate


def records(n: int, seed: int, prefix: str) -> list[InputRecord]:
    return [InputRecord(topic, 0, i, key, value) for i, (topic, key, value) in
            enumerate(generate(n, seed=seed, prefix=prefix))]


def run(url: str, batches: list[list[InputRecord]], profile: cProfile.Profile | None) -> float:
    engine = make_engine(url)
    create_tables(engine)
    processor = Processor(engine, Settings(database_url=url), instance="bench")
    start = time.perf_counter()
    for batch in batches:
        if profile is not None:
            profile.enable()
        processor.process(batch)
        if profile is not None:
            profile.disable()
    elapsed = time.perf_counter() - start
    engine.dispose()
    return elapsed


def main(args) -> None:
    def split(items):
        return [items[i:i + args.batch] for i in range(0, len(items), args.batch)]

    with tempfile.TemporaryDirectory() as tmp:
        if args.sqlite:
            urls = (f"sqlite:///{Path(tmp) / 'plain.db'}", f"sqlite:///{Path(tmp) / 'profiled.db'}")
            ctx = None
        else:
            ctx = h.postgres(args.database_url)
            url = ctx.__enter__()
            urls = (url, url)
        try:
            plain = split(records(args.events, args.seed, h.unique("pa")))
            elapsed = run(urls[0], plain, None)
            print(f"{args.events:,} events in batches of {args.batch}: {elapsed:.2f} s = "
                  f"{args.events / elapsed:,.0f} events/s, {elapsed / args.events * 1e6:,.0f} µs/event (no profiler)")
            profile = cProfile.Profile()
            profiled = split(records(args.events, args.seed, h.unique("pb")))
            elapsed = run(urls[1], profiled, profile)
            print(f"with cProfile: {elapsed:.2f} s")
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).strip_dirs().sort_stats(order).print_stats(args.top)
        print(f"\n=== top {args.top} by {order} ===")
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:12000])
    if args.dump:
        profile.dump_stats(args.dump)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--events", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--sqlite", action="store_true")
    parser.add_argument("--database-url")
    parser.add_argument("--dump", help="write the raw profile here (for snakeviz / pstats)")
    main(parser.parse_args())

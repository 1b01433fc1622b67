"""End-to-end throughput: a bare Kafka consumer vs onevoice on PostgreSQL and on SQLite.

Publishes N generated events (bench/workload.py, fresh id prefix) to the input topics, then:

  (a) baseline  - a bare aiokafka consumer in a fresh group (getmany loop, only sums value bytes);
  (b) onevoice  - a `Service` on a fresh PostgreSQL database, fresh group;
  (c) onevoice  - the same on a fresh SQLite file.

Every group starts at the input offsets from just before the publish, so only this run's events
count even on a shared broker. onevoice is timed from `Service.run()` until the group's committed
offsets reach the end of the published events; the outbox drain is timed until no output row
is left unsent. Without --bootstrap / --database-url it starts its own broker (fresh data dir)
and PostgreSQL cluster and removes them afterwards.

    uv run python bench/e2e_throughput.py [-n 50000] [--bootstrap HOST:PORT] [--database-url postgresql://...]
                                          [--skip-sqlite] [--skip-postgres] [--max-batch 2000] [--warmup 20000] [--py-spy FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
from pathlib import Path

import _harness as h
from aiokafka import AIOKafkaConsumer

from consumers.service import Service
from consumers.topics import ensure_topics
from schemas.registry import INPUT_TOPICS
from services.config import Settings
from services.devkit.scenario_runner import end_offsets, start_group_at
from workload import generate

PARTITIONS = 6


async def baseline(bootstrap: str, start: dict, targets: dict) -> dict:
    """A consumer that does nothing with the messages: the ceiling for any consumer on this machine."""
    group = h.unique("bench-baseline-")
    await start_group_at(bootstrap, group, start)
    t0 = time.perf_counter()
    consumer = AIOKafkaConsumer(*INPUT_TOPICS, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_bytes=16 * 1024 * 1024,
                                max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    count = nbytes = 0
    first = None
    remaining = {tp: end for tp, end in targets.items() if end > start.get(tp, 0)}
    try:
        while remaining:
            fetched = await consumer.getmany(timeout_ms=200, max_records=2000)
            for tp, messages in fetched.items():
                if first is None and messages:
                    first = time.perf_counter()
                for m in messages:
                    if m.offset < targets.get(tp, 0):
                        count += 1
                        nbytes += len(m.value or b"")
                if messages and messages[-1].offset + 1 >= remaining.get(tp, 1 << 62):
                    remaining.pop(tp, None)
        done = time.perf_counter()
    finally:
        await consumer.stop()
    return {"events": count, "bytes": nbytes, "seconds": done - t0, "steady_seconds": done - (first or t0)}


async def onevoice(bootstrap: str, database_url: str, start: dict, targets: dict, n: int, *, max_batch: int,
                   timeout: float, master_first: bool = True, py_spy: str | None = None) -> dict:
    """Run a Service from a fresh group at `start` until it committed `targets` and its outbox is drained."""
    group = h.unique("bench-onevoice-")
    settings = Settings(kafka_bootstrap=bootstrap, database_url=database_url, group_id=group, partitions=PARTITIONS,
                        max_batch=max_batch, ops_interval_s=10, timer_interval_s=5)
    if master_first:
        # Master data (crm.accounts) first, untimed, as a running system would have it: otherwise
        # the topics' interleaving decides how many events find their key account, and so the work.
        accounts = {tp: off for tp, off in targets.items() if tp.topic == "crm.accounts"}
        await start_group_at(bootstrap, group, {tp: (targets[tp] if tp.topic != "crm.accounts" else off)
                                                for tp, off in start.items()})
        loader = Service(settings)
        loading = asyncio.create_task(loader.run())
        await asyncio.wait_for(loader.ready.wait(), 120)
        await h.wait_caught_up(bootstrap, group, accounts, timeout=timeout, task=loading)
        loader.request_stop()
        await asyncio.wait_for(loading, 60)
        n -= sum(off - start.get(tp, 0) for tp, off in accounts.items())
        start = {tp: (targets[tp] if tp.topic == "crm.accounts" else off) for tp, off in start.items()}
    await start_group_at(bootstrap, group, start)
    service = Service(settings)
    sampler = h.start_py_spy(py_spy, gil_only=not os.environ.get("PY_SPY_ALL_THREADS")) if py_spy else None
    broker_pid = h.BROKER_PIDS.get(bootstrap)
    broker_cpu0 = h.process_cpu_s(broker_pid) if broker_pid else None
    t0, cpu0 = time.perf_counter(), time.process_time()
    task = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.ready.wait(), 120)
        ready = time.perf_counter()
        caught_up = await h.wait_caught_up(bootstrap, group, targets, timeout=timeout, task=task)
        cpu = time.process_time() - cpu0
        broker_cpu = h.process_cpu_s(broker_pid) - broker_cpu0 if broker_pid else None
        if sampler is not None:
            h.stop_py_spy(sampler)
        while True:
            total, unsent = await asyncio.to_thread(h.outbox_counts, service.engine)
            if unsent == 0:
                break
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"outbox not drained: {unsent} of {total} unsent")
            await asyncio.sleep(0.05)
        drained = time.perf_counter()
        sent = service.relay.sent
        counts = await asyncio.to_thread(h.counters, service.engine)
    finally:
        service.request_stop()
        await asyncio.wait_for(task, 60)
    return {"events": n, "seconds": caught_up - t0, "steady_seconds": caught_up - ready,
            "startup_seconds": ready - t0, "outputs": total, "published_outputs": sent,
            "drain_after_caught_up": drained - caught_up, "drained_seconds": drained - t0, "counters": counts,
            "input_wait_s": round(service.input_wait_s, 3), "cpu_us_per_event": round(cpu / n * 1e6, 1),
            "broker_cores": round(broker_cpu / (caught_up - t0), 2) if broker_cpu is not None else None}


async def warm_up(bootstrap: str, args) -> None:
    """Run onevoice (on SQLite) once over a smaller workload on the broker this run started, then wait
    for the broker to fall idle: what follows meets a broker whose JIT compiler is done, like any
    broker that has been up for more than a minute (not part of onevoice's cost)."""
    messages = generate(args.warmup, seed=args.seed + 1, prefix=h.unique("warm"))
    start = await end_offsets(bootstrap, INPUT_TOPICS)
    await h.publish(bootstrap, messages)
    targets = await end_offsets(bootstrap, INPUT_TOPICS)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="onevoice-bench-warmup-") as tmp:
        await onevoice(bootstrap, f"sqlite:///{Path(tmp) / 'warmup.db'}", start, targets, len(messages),
                       max_batch=args.max_batch, timeout=args.timeout)
    ran = time.perf_counter() - began
    idle_after = await h.wait_until_idle(h.BROKER_PIDS[bootstrap])
    print(f"broker warm-up: onevoice over {len(messages):,} events in {ran:.1f} s, broker idle {idle_after:.1f} s "
          f"after", flush=True)


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


async def main(args) -> None:
    with h.broker(args.bootstrap) as bootstrap:
        await ensure_topics(bootstrap, PARTITIONS)
        if args.warmup and bootstrap in h.BROKER_PIDS:  # before the publish: the runs below read up to its end
            await warm_up(bootstrap, args)
        messages = generate(args.events, seed=args.seed, prefix=h.unique("e2e"))
        start = await end_offsets(bootstrap, INPUT_TOPICS)
        seconds = await h.publish(bootstrap, messages)
        targets = await end_offsets(bootstrap, INPUT_TOPICS)
        n = sum(targets[tp] - start.get(tp, 0) for tp in targets)
        assert n == len(messages), (n, len(messages))
        print(f"published {n:,} events to {len(INPUT_TOPICS)} topics in {seconds:.1f} s "
              f"({rate(n, seconds):,.0f}/s); bootstrap {bootstrap}", flush=True)

        results = {}
        base = await baseline(bootstrap, start, targets)
        results["baseline (bare consumer)"] = base
        print(f"baseline: {base['events']:,} events, {base['bytes'] / 1e6:.1f} MB in {base['seconds']:.2f} s",
              flush=True)
        if not args.skip_postgres:
            with h.postgres(args.database_url) as url:
                r = await onevoice(bootstrap, url, start, targets, n, max_batch=args.max_batch, timeout=args.timeout,
                                   master_first=not args.interleaved, py_spy=args.py_spy)
                results["onevoice PostgreSQL"] = r
                print(f"onevoice PostgreSQL: {r}", flush=True)
        if not args.skip_sqlite:
            with tempfile.TemporaryDirectory(prefix="onevoice-bench-sqlite-") as tmp:
                url = f"sqlite:///{Path(tmp) / 'bench.db'}"
                r = await onevoice(bootstrap, url, start, targets, n, max_batch=args.max_batch, timeout=args.timeout,
                                   master_first=not args.interleaved)
                results["onevoice SQLite"] = r
                print(f"onevoice SQLite: {r}", flush=True)

    base_rate = rate(base["events"], base["seconds"])
    print()
    print(f"{n:,} events, max_batch {args.max_batch}")
    print(f"{'run':<26} {'seconds':>8} {'events/s':>10} {'ratio':>7} {'steady ev/s':>12} {'outputs':>8} "
          f"{'drain s':>8} {'CPU µs/ev':>10} {'broker cores':>13}")
    for name, r in results.items():
        ev_s = rate(r["events"], r["seconds"])
        steady = rate(r["events"], r["steady_seconds"])
        drain = f"{r['drain_after_caught_up']:.2f}" if "drain_after_caught_up" in r else "-"
        outputs = f"{r['outputs']:,}" if "outputs" in r else "-"
        cpu = f"{r['cpu_us_per_event']:.0f}" if "cpu_us_per_event" in r else "-"
        broker_cores = f"{r['broker_cores']:.2f}" if r.get("broker_cores") is not None else "-"
        print(f"{name:<26} {r['seconds']:>8.2f} {ev_s:>10,.0f} {ev_s / base_rate:>7.3f} {steady:>12,.0f} "
              f"{outputs:>8} {drain:>8} {cpu:>10} {broker_cores:>13}")
    print("ratio = events/s / baseline events/s; steady = from first fetched record (baseline) or Service.ready "
          "(onevoice); drain s = outbox drain after the group caught up; CPU = this process's CPU time (all threads) "
          "from start to caught up, per event; broker cores = CPU the broker used meanwhile (its JVM, all threads: "
          "request handling, and the JIT compiler while the broker is young)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--events", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bootstrap")
    parser.add_argument("--database-url")
    parser.add_argument("--max-batch", type=int, default=2000)
    parser.add_argument("--py-spy", metavar="FILE", help="sample this process with py-spy (--gil, raw format) while "
                        "onevoice on PostgreSQL runs, from start to caught up; needs `uvx py-spy` and ptrace rights")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--warmup", type=int, default=20_000, metavar="N",
                        help="events of an untimed onevoice run (SQLite) before the measurements, on a broker this "
                             "script started, which then gets time to fall idle: its JIT compiler otherwise takes a "
                             "third of a core during the measurement (0: measure against a cold broker)")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--interleaved", action="store_true",
                        help="do not load the master data (crm.accounts) first: events of all topics interleave as "
                             "Kafka hands them out, so how many find their key account varies from run to run")
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(parser.parse_args()))

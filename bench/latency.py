"""Event-to-output latency at a steady rate on PostgreSQL (or on SQLite: --database-url sqlite:///FILE).

Runs a `Service` (fresh PostgreSQL database, fresh group at the current end of the input
topics), then publishes generated events (bench/workload.py) at a fixed rate (default 500/s
for 30 s). Every `dunning.triggered` yields exactly one instruction on kam.instructions at
once (CONTRACT §5), matched by `ref_id` = `dunning_id`: its latency is the time from just
before the producer's send to the instruction's arrival at a consumer tailing
kam.instructions (same process, same monotonic clock). Prints p50/p95/p99/max.

    uv run python bench/latency.py [--rate 500] [--seconds 30] [--bootstrap HOST:PORT]
                                   [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import asyncio
import json
import logging
import statistics
import time
from datetime import datetime

import _harness as h
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from consumers.service import Service
from consumers.topics import ensure_topics
from schemas.registry import INPUT_TOPICS, INSTRUCTIONS_TOPIC
from services.config import Settings
from services.devkit.scenario_runner import end_offsets, start_group_at
from workload import generate

PARTITIONS = 6
TICK_S = 0.005
WINDOW_S = 10.0  # latency is also shown per window of sending time: is it steady?


applied_at: dict[str, datetime] = {}  # when the service's transaction began (instruction created_at)
published_at: dict[str, float] = {}  # Kafka timestamp of the instruction (relay send time)
sent_wall: dict[str, float] = {}
arrived_wall: dict[str, float] = {}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


async def tail_instructions(bootstrap: str, sent: dict[str, float], arrived: dict[str, float],
                            stop: asyncio.Event, ready: asyncio.Event) -> None:
    """Record the first arrival time of an instruction for each dunning we sent."""
    # fetch_min_bytes=1 (the default): the broker answers as soon as an instruction arrives, so a long
    # wait costs no latency; a short one (it was 5 ms) only loads the broker with empty polls.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        ends = await end_offsets(bootstrap, (INSTRUCTIONS_TOPIC,))
        consumer.assign(list(ends))
        for tp, end in ends.items():
            consumer.seek(tp, end)
        ready.set()
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=50)
            now = time.monotonic()
            for messages in fetched.values():
                for m in messages:
                    instruction = json.loads(m.value)
                    ref = instruction.get("ref_id")
                    if ref in sent and ref not in arrived:
                        applied_at[ref] = datetime.fromisoformat(instruction["created_at"].replace("Z", "+00:00"))
                        published_at[ref] = m.timestamp / 1000
                        arrived[ref] = now
                        arrived_wall[ref] = time.time()
    finally:
        await consumer.stop()


class ServiceProcess:
    """`onevoice run` as its own process, as in production, so the load generator does not share its GIL."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.ready = asyncio.Event()
        self.process = None

    async def run(self) -> None:
        env = {**os.environ, "ONEVOICE_KAFKA_BOOTSTRAP": self.settings.kafka_bootstrap,
               "ONEVOICE_DATABASE_URL": self.settings.database_url, "ONEVOICE_GROUP_ID": self.settings.group_id,
               "ONEVOICE_PARTITIONS": str(self.settings.partitions), "ONEVOICE_TIMER_INTERVAL_S": "5"}
        extra = ["-v"] if os.environ.get("BENCH_VERBOSE") else []
        self.process = await asyncio.create_subprocess_exec(sys.executable, "-m", "consumers.cli", "run", *extra, env=env,
                                                            stderr=asyncio.subprocess.PIPE)
        while True:
            line = await self.process.stderr.readline()
            if not line:
                break
            if b"consuming" in line:
                self.ready.set()
            if extra and b"onevoice" in line:
                sys.stderr.write(line.decode())
        await self.process.wait()

    def request_stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)


async def main(args) -> None:
    with h.broker(args.bootstrap) as bootstrap, h.postgres(args.database_url) as url:
        await ensure_topics(bootstrap, PARTITIONS)
        n_warmup = int(args.rate * args.warmup)
        n = n_warmup + int(args.rate * args.seconds)
        messages = generate(n, seed=args.seed, prefix=h.unique("lat"))
        dunning_of = {}
        for i, (topic, _key, value) in enumerate(messages):
            event = json.loads(value)
            if event.get("type") == "dunning.triggered":
                dunning_of[i] = event["data"]["dunning_id"]
        warmup_dunnings = {d for i, d in dunning_of.items() if i < n_warmup}
        group = h.unique("bench-latency-")
        await start_group_at(bootstrap, group, await end_offsets(bootstrap, INPUT_TOPICS))
        settings = Settings(kafka_bootstrap=bootstrap, database_url=url, group_id=group, partitions=PARTITIONS,
                            ops_interval_s=10, timer_interval_s=5)
        service = ServiceProcess(settings) if not args.in_process else Service(settings)
        task = asyncio.create_task(service.run())
        sent: dict[str, float] = {}
        arrived: dict[str, float] = {}
        stop, tail_ready = asyncio.Event(), asyncio.Event()
        tail = asyncio.create_task(tail_instructions(bootstrap, sent, arrived, stop, tail_ready))
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0)
        await producer.start()
        try:
            await asyncio.wait_for(service.ready.wait(), 120)
            await asyncio.wait_for(tail_ready.wait(), 60)
            await asyncio.sleep(2.0)  # let the group settle: partitions assigned, first fetch issued
            # This process must not stall while it measures: a full collection of its own objects (the
            # workload, the send futures) paused it 125-150 ms, and the instruction it was about to
            # receive counted that as the service's latency. The workload is frozen out of collections,
            # and acknowledged sends are dropped as they complete.
            gc.collect()
            gc.freeze()
            start = time.monotonic()
            unacknowledged: list[asyncio.Future] = []
            i = 0
            while i < n:
                due = int((time.monotonic() - start) * args.rate) + 1
                while i < min(due, n):
                    topic, key, value = messages[i]
                    if i in dunning_of:
                        sent.setdefault(dunning_of[i], time.monotonic())  # a repeated dunning: its first send
                        sent_wall.setdefault(dunning_of[i], time.time())
                    unacknowledged.append(await producer.send(topic, value, key=key))
                    i += 1
                if len(unacknowledged) >= 1000:
                    for future in unacknowledged:
                        if future.done():
                            future.result()  # a failed send ends the run
                    unacknowledged = [future for future in unacknowledged if not future.done()]
                await asyncio.sleep(TICK_S)
            publish_s = time.monotonic() - start
            await asyncio.gather(*unacknowledged)
            deadline = time.monotonic() + args.settle
            while len(arrived) < len(sent) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await producer.stop()
            await tail
            service.request_stop()
            await asyncio.wait_for(task, 60)

    measured = [d for d in sent if d not in warmup_dunnings]
    latencies = [(arrived[d] - sent[d]) * 1000 for d in measured if d in arrived]
    missing = len(measured) - len(latencies)
    print()
    print(f"{n:,} events at {args.rate:g}/s target ({n / publish_s:,.0f}/s achieved) for {publish_s:.1f} s "
          f"on {'SQLite' if url.startswith('sqlite') else 'PostgreSQL'}, the first {args.warmup:g} s a warm-up; "
          f"{len(measured)} measured dunnings -> "
          f"{len(latencies)} instructions matched ({missing} missing after {args.settle:g} s)")
    if latencies:
        print(f"{'p50':>8} {'p95':>8} {'p99':>8} {'max':>8} {'mean':>8}  (ms, produce -> instruction received)")
        print(f"{percentile(latencies, 50):>8.1f} {percentile(latencies, 95):>8.1f} {percentile(latencies, 99):>8.1f} "
              f"{max(latencies):>8.1f} {statistics.fmean(latencies):>8.1f}")
        refs = [d for d in measured if d in arrived]
        legs = {
            "produce -> applied": [(applied_at[d].timestamp() - sent_wall[d]) * 1000 for d in refs],
            "applied -> published": [(published_at[d] - applied_at[d].timestamp()) * 1000 for d in refs],
        }
        for name, values in legs.items():
            print(f"  {name:22s} p50 {percentile(values, 50):7.1f}  p99 {percentile(values, 99):7.1f} ms")
        if args.dump:
            with open(args.dump, "w") as out:
                json.dump({d: {"sent": sent_wall[d], "applied": applied_at[d].timestamp(), "published": published_at[d],
                               "arrived": arrived_wall[d]} for d in refs}, out)
        windows: dict[int, list[float]] = {}
        for d in (d for d in sent if d in arrived):  # warm-up included: is it steady?
            windows.setdefault(int((sent[d] - start) // WINDOW_S), []).append((arrived[d] - sent[d]) * 1000)
        print(f"  by {WINDOW_S:g} s of sending: " + "  ".join(
            f"[{w * WINDOW_S:g}s] p50 {percentile(v, 50):.0f} p99 {percentile(v, 99):.0f}"
            for w, v in sorted(windows.items())))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=30, help="measured seconds, after the warm-up")
    parser.add_argument("--warmup", type=float, default=30,
                        help="seconds at the same rate before measuring (not counted): the broker is started "
                             "fresh and its JIT compiler takes about a core for the first minute")
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--settle", type=float, default=60, help="max seconds to wait for the last instructions")
    parser.add_argument("--bootstrap")
    parser.add_argument("--database-url")
    parser.add_argument("--dump", help="write each measured dunning's wall-clock times (sent, transaction began, "
                                       "published, arrived) to this JSON file")
    parser.add_argument("--in-process", action="store_true",
                        help="run the service in this process (shares the event loop and GIL with the load generator "
                             "and the measuring consumer, which inflates latency); default: an `onevoice run` process")
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(parser.parse_args()))

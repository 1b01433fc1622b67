"""Shared plumbing of the end-to-end benchmarks: a broker, a database, publishing, waiting for a group.

Not a benchmark itself. Every helper takes explicit addresses so the benchmarks can run against
their own throwaway broker / PostgreSQL or against ones given on the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402

from services.store import tables as t  # noqa: E402
from services.devkit.broker import PID_FILE  # noqa: E402
from services.store.db import make_engine  # noqa: E402
from services.store.tables import metadata  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def broker(bootstrap: str | None):
    """Yield a bootstrap address: the given one, or a fresh single-node broker (own data dir) stopped afterwards."""
    if bootstrap:
        yield bootstrap
        return
    from services.devkit.broker import start_broker, stop_broker

    port = free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="onevoice-bench-kafka-"))
    address = start_broker(port, data_dir, quiet=True)
    BROKER_PIDS[address] = int((data_dir / PID_FILE).read_text())
    try:
        yield address
    finally:
        BROKER_PIDS.pop(address, None)
        stop_broker(data_dir, port)
        shutil.rmtree(data_dir, ignore_errors=True)


BROKER_PIDS: dict[str, int] = {}  # bootstrap address -> JVM pid, of the brokers `broker` started


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_until_idle(pid: int, *, below: float = 0.05, window: float = 1.0, timeout: float = 60.0) -> float:
    """Wait until a process uses less than `below` of a core over `window` seconds; returns the seconds waited.

    A freshly started JVM compiles its hot code for a while after the load that made it hot: on
    this 2-core machine the broker's JIT compiler threads took a third of a core during a
    measurement that followed its start by a minute.
    """
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        before = process_cpu_s(pid)
        await asyncio.sleep(window)
        if process_cpu_s(pid) - before < below * window:
            break
    return time.monotonic() - began


@contextlib.contextmanager
def postgres(url: str | None):
    """Yield a PostgreSQL URL: the given one (its onevoice tables are dropped first), or a throwaway cluster
    with the server's default durability (fsync, synchronous_commit, full_page_writes on): a figure measured
    on a server that may lose committed transactions would promise what onevoice cannot keep. The settings
    the benchmark ran on are printed either way."""
    from tests.support.postgres import durability

    if url and url.startswith("sqlite"):  # the SQLite default store, as `onevoice run` makes it
        print(f"SQLite: {url}", flush=True)
        yield url
        return
    if url:
        engine = make_engine(url)
        metadata.drop_all(engine)
        with engine.begin() as conn:  # or the migrations would think the dropped tables still exist
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        engine.dispose()
        print(f"PostgreSQL: {durability(url)}", flush=True)
        yield url
        return
    from tests.support.postgres import start_postgres

    url, stop = start_postgres(fast=False)
    try:
        print(f"PostgreSQL: {durability(url)}", flush=True)
        yield url
    finally:
        stop()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


async def publish(bootstrap: str, messages, *, chunk: int = 5000) -> float:
    """Publish (topic, key, value) tuples as fast as the broker takes them; returns seconds."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
                                max_batch_size=256 * 1024, max_request_size=2 * 1024 * 1024)
    await producer.start()
    start = time.perf_counter()
    try:
        for i in range(0, len(messages), chunk):
            futures = [await producer.send(topic, value, key=key) for topic, key, value in messages[i:i + chunk]]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - start


async def wait_caught_up(bootstrap: str, group_id: str, targets: dict[TopicPartition, int], *, timeout: float,
                         task: asyncio.Task | None = None, poll: float = 0.1) -> float:
    """Wait until the group's committed offsets reach `targets`; returns time.perf_counter() when seen."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if task is not None and task.done():
                task.result()
                raise RuntimeError("service stopped before catching up")
            committed = await admin.list_consumer_group_offsets(group_id)
            if all((committed[tp].offset if tp in committed and committed[tp] else -1) >= end
                   for tp, end in targets.items() if end):
                return time.perf_counter()
            await asyncio.sleep(poll)
        raise TimeoutError(f"group {group_id} did not catch up within {timeout:.0f} s")
    finally:
        await admin.close()


def start_py_spy(output: str, gil_only: bool = True) -> subprocess.Popen:
    """Sample this process (threads holding the GIL, or all threads and idle ones too, 200/s) into `output`
    until `stop_py_spy`."""
    sampler = subprocess.Popen(["uvx", "py-spy", "record", "--pid", str(os.getpid()), "-r", "200", "-f", "raw",
                                "-o", output, *(["--gil"] if gil_only else ["--idle", "--threads"])],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(2)  # uvx resolving and py-spy attaching; the samples start after this
    return sampler


def stop_py_spy(sampler: subprocess.Popen) -> None:
    sampler.send_signal(signal.SIGINT)
    sampler.wait(30)


def counters(engine) -> dict[str, int]:
    """The service's ops counters (processed, duplicates, stale, dead_letters, unknown_accounts), all instances."""
    with engine.connect() as conn:
        return {name: int(value) for name, value in conn.execute(
            select(t.counters.c.name, func.sum(t.counters.c.value)).group_by(t.counters.c.name)).all()}


def outbox_counts(engine) -> tuple[int, int]:
    """(all outbox rows, unsent outbox rows)."""
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(t.outbox)).scalar()
        unsent = conn.execute(select(func.count()).select_from(t.outbox).where(t.outbox.c.sent_at.is_(None))).scalar()
    return total, unsent

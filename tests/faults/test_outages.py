"""Faults: broker or database away for 20 s, either away at start, outputs too large for the broker.

Run with `pytest -m faults tests/faults` (about 6 minutes; not part of the default run). The
suite has its own Kafka broker and PostgreSQL cluster, stopped and started by the tests, and
runs `onevoice run` as a subprocess. Each run publishes the same workload under its own id
prefix (tests/faults/harness.py: outputs independent of the reading order), in two halves with
the fault in between, and must publish exactly what a clean run publishes: nothing lost, nothing
doubled. During an outage the service must stay under 10 % of a core and write fewer than 20
log lines; at the end no log the suite wrote may contain a password. Figures are printed
(`-s` shows them).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from consumers.topics import ensure_topics
from schemas.registry import INPUT_TOPICS
from services import kafka_clients
from services.devkit.broker import start_broker, stop_broker
from services.devkit.scenario_runner import OUTPUT_TOPICS, end_offsets, group_caught_up, read_outputs, start_group_at
from tests.faults.harness import (ControlledPostgres, cpu_seconds, free_port, log_lines_between, output_keys,
                                  wait_for, workload)
from tests.support.service_process import ServiceProcess

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.postgres, pytest.mark.timeout(900)]

DB_PASSWORD = "Db-" + uuid.uuid4().hex
SMTP_PASSWORD = "Smtp-" + uuid.uuid4().hex
OUTAGE_S = 20.0
CPU_LIMIT = 0.10
LOG_LINE_LIMIT = 20
FIGURES: dict[str, dict] = {}


class Rig:
    """The suite's own broker and database, and the runs made on them."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.port = free_port()
        self.broker_dir = tmp / "kafka"
        self.bootstrap = start_broker(self.port, self.broker_dir, quiet=True)
        self.pg = ControlledPostgres(DB_PASSWORD)
        asyncio.run(ensure_topics(self.bootstrap, 3))

    def stop_kafka(self) -> None:
        stop_broker(self.broker_dir, self.port)

    def start_kafka(self) -> None:
        start_broker(self.port, self.broker_dir, quiet=True)

    def close(self) -> None:
        self.stop_kafka()
        self.pg.destroy()


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    rig = Rig(tmp_path_factory.mktemp("faults"))
    yield rig
    rig.close()


class Run:
    """One `onevoice run` on a fresh database and group, fed one workload in two halves."""

    def __init__(self, rig: Rig, name: str, **workload_options):
        self.rig, self.name = rig, name
        self.prefix = f"f{uuid.uuid4().hex[:6]}"
        self.messages = workload(self.prefix, **workload_options)
        self.group = f"onevoice-faults-{self.prefix}"
        self.database = rig.pg.create_database(f"faults_{self.prefix}")
        self.log = rig.tmp / f"{name}.log"
        self.engine = create_engine(self.database.replace("postgresql://", "postgresql+psycopg://"),
                                    pool_pre_ping=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ONEVOICE_")}
        env.update(ONEVOICE_KAFKA_BOOTSTRAP=rig.bootstrap, ONEVOICE_DATABASE_URL=self.database,
                   ONEVOICE_GROUP_ID=self.group, ONEVOICE_PARTITIONS="3", ONEVOICE_OPS_INTERVAL_S="5",
                   ONEVOICE_SMTP_URL=f"smtp://mailer:{SMTP_PASSWORD}@127.0.0.1:2525",
                   ONEVOICE_CACHE_DIR=os.environ.get("ONEVOICE_CACHE_DIR", ""), PYTHONUNBUFFERED="1")
        self.service = ServiceProcess(env, self.log)
        self.input_start = asyncio.run(end_offsets(rig.bootstrap, INPUT_TOPICS))
        self.output_start = asyncio.run(end_offsets(rig.bootstrap, OUTPUT_TOPICS))
        asyncio.run(start_group_at(rig.bootstrap, self.group, self.input_start))

    # -- driving -------------------------------------------------------------------------------

    def publish(self, part: int) -> None:
        half = len(self.messages) // 2
        chunk = self.messages[:half] if part == 1 else self.messages[half:]

        async def send():
            producer = kafka_clients.producer(self.rig.bootstrap, enable_idempotence=True, linger_ms=5)
            await producer.start()
            try:
                for topic, key, value in chunk:
                    await producer.send(topic, value, key=key)
                await producer.flush()
            finally:
                await producer.stop()

        asyncio.run(send())

    def log_size(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def unsent(self) -> int | None:
        try:
            with self.engine.connect() as conn:
                return conn.execute(text("SELECT count(*) FROM outbox WHERE sent_at IS NULL")).scalar()
        except Exception:
            return None

    def caught_up(self, timeout: float = 180) -> None:
        targets = asyncio.run(end_offsets(self.rig.bootstrap, INPUT_TOPICS))

        async def check() -> bool:
            admin = kafka_clients.admin(self.rig.bootstrap)
            await admin.start()
            try:
                return await group_caught_up(admin, self.group, targets)
            finally:
                await admin.close()

        def done() -> bool:
            assert self.service.alive(), f"{self.name}: service died; log:\n{self.service.tail()}"
            try:
                return asyncio.run(check()) and self.unsent() == 0
            except Exception:
                return False

        wait_for(done, timeout, 0.5, f"{self.name}: group {self.group} to catch up and the outbox to drain")

    def finish(self):
        """Stop the service (SIGTERM) and return this run's published outputs as comparable keys."""
        assert self.service.terminate(60) == 0, self.service.tail()
        outputs = asyncio.run(read_outputs(self.rig.bootstrap, self.output_start))
        self.engine.dispose()
        return _normalised(output_keys(outputs, self.prefix), self.prefix)

    def outage_figures(self, began_at: float, cpu_from: float, cpu_until: float, cpu_a: float, cpu_b: float,
                       log_from: int, log_to: int) -> dict:
        lines = log_lines_between(self.log, log_from, log_to)
        figures = {"cpu_share": round((cpu_b - cpu_a) / max(cpu_until - cpu_from, 1e-6), 4),
                   "cpu_window_s": round(cpu_until - cpu_from, 1), "log_lines": len(lines),
                   "outage_s": round(time.monotonic() - began_at, 1)}
        FIGURES[self.name] = {**figures, "lines": lines}
        print(f"\n[{self.name}] {json.dumps(figures)}\n  " + "\n  ".join(lines))
        return figures


def _normalised(keys, prefix: str):
    from collections import Counter

    return Counter({tuple(str(part).replace(prefix, "P") for part in key): n for key, n in keys.items()})


@pytest.fixture(scope="module")
def reference(rig):
    """A clean run: what every faulty run must publish, too."""
    run = Run(rig, "clean")
    run.service.start()
    run.publish(1)
    run.publish(2)
    run.caught_up()
    keys = run.finish()
    dunnings, shortages, junk = 160, 20, 6
    assert sum(n for key, n in keys.items() if key[0] == "instruction") == dunnings + shortages
    assert sum(n for key, n in keys.items() if key[0] == "dead_letter") == junk
    assert max(keys.values()) == 1
    return keys


def _sample_cpu(run: Run, seconds: float) -> tuple[float, float, float, float]:
    """(from, until, cpu at from, cpu at until) over `seconds` of wall time."""
    pid = run.service.proc.pid
    began, cpu_a = time.monotonic(), cpu_seconds(pid)
    time.sleep(seconds)
    return began, time.monotonic(), cpu_a, cpu_seconds(pid)


def _assert_calm(figures: dict) -> None:
    assert figures["cpu_share"] < CPU_LIMIT, figures
    assert figures["log_lines"] < LOG_LINE_LIMIT, figures


def test_broker_away_for_20_s(rig, reference):
    run = Run(rig, "broker-down")
    run.service.start()
    run.publish(1)
    run.caught_up()
    run.publish(2)  # then at once away: part of it is in flight in the service when the broker goes
    log_from, began = run.log_size(), time.monotonic()
    rig.stop_kafka()
    cpu = _sample_cpu(run, OUTAGE_S - (time.monotonic() - began))
    rig.start_kafka()
    run.caught_up()
    wait_for(lambda: "Kafka is back" in "\n".join(log_lines_between(run.log, log_from)), 60, 0.5, "'Kafka is back'")
    figures = run.outage_figures(began, *cpu, log_from, run.log_size())
    assert run.finish() == reference
    _assert_calm(figures)


def test_database_away_for_20_s(rig, reference):
    run = Run(rig, "database-down")
    run.service.start()
    run.publish(1)
    run.caught_up()
    log_from, began = run.log_size(), time.monotonic()
    rig.pg.stop()
    run.publish(2)  # arrives while the database is away: consumed, not applied, not committed
    cpu = _sample_cpu(run, OUTAGE_S - (time.monotonic() - began))
    rig.pg.start()
    run.caught_up()
    wait_for(lambda: "database is back" in "\n".join(log_lines_between(run.log, log_from)), 60, 0.5,
             "'database is back'")
    figures = run.outage_figures(began, *cpu, log_from, run.log_size())
    assert run.finish() == reference
    _assert_calm(figures)


def test_start_while_the_broker_is_away(rig, reference):
    _start_during_outage(rig, reference, "start-broker-down", rig.stop_kafka, rig.start_kafka, "Kafka unavailable")


def test_start_while_the_database_is_away(rig, reference):
    _start_during_outage(rig, reference, "start-database-down", rig.pg.stop, rig.pg.start, "database unavailable")


def _start_during_outage(rig, reference, name: str, stop, start, outage_line: str) -> None:
    """The service starts while `stop` has taken something away, waits calmly, and works once `start` brings it."""
    run = Run(rig, name)
    stop()
    began = time.monotonic()
    run.service.start()
    # measured from the first outage line on (the interpreter's start-up is no outage)
    wait_for(lambda: outage_line in "\n".join(log_lines_between(run.log, 0)), 60, 0.2, "the outage line")
    cpu = _sample_cpu(run, 10)
    assert run.service.alive(), run.service.tail()
    start()
    run.publish(1)
    run.publish(2)
    run.caught_up()
    figures = run.outage_figures(began, *cpu, 0, run.log_size())
    assert run.finish() == reference
    _assert_calm(figures)


def test_giving_up_at_start_is_one_line(rig, tmp_path):
    """Nothing answers: after ONEVOICE_STARTUP_WAIT_S, one line naming what is missing, and exit != 0."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("ONEVOICE_")}
    env.update(ONEVOICE_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
               ONEVOICE_DATABASE_URL=f"postgresql://kam:{DB_PASSWORD}@127.0.0.1:{free_port()}/nowhere",
               ONEVOICE_STARTUP_WAIT_S="3")
    proc = subprocess.run([sys.executable, "-m", "consumers.cli", "run"], env=env, capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2])
    (rig.tmp / "give-up.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: gave up after 3 s"), proc.stderr
    assert "database" in last and "Kafka" in last and "kam:***@" in last
    assert "Traceback" not in proc.stderr and DB_PASSWORD not in proc.stdout + proc.stderr


def test_outputs_too_large_are_set_aside_and_the_rest_delivered_once(rig, reference):
    """kam.instructions takes at most 1,500 bytes from after the relay read its limits: the broker refuses the
    large allocations; they are set aside (counted, one line each), everything else is published once."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    async def set_limit(value: str | None):
        admin = kafka_clients.admin(rig.bootstrap)
        await admin.start()
        try:
            await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "kam.instructions",
                                                      configs={"max.message.bytes": value})])
        finally:
            await admin.close()

    run = Run(rig, "oversize", big_orders=40)
    run.service.start()
    run.publish(1)
    run.caught_up()
    log_from = run.log_size()
    asyncio.run(set_limit("1500"))
    try:
        run.publish(2)
        run.caught_up()
    finally:
        asyncio.run(set_limit("1048588"))
    with run.engine.connect() as conn:
        set_aside = [r.undeliverable for r in conn.execute(text(
            "SELECT undeliverable FROM outbox WHERE undeliverable IS NOT NULL ORDER BY id"))]
        counted = conn.execute(text("SELECT coalesce(sum(value), 0) FROM counters WHERE name = 'undeliverable'")).scalar()
    lines = [line for line in log_lines_between(run.log, log_from) if "set aside as undeliverable" in line]
    keys = run.finish()
    big = [n for n in range(20) if n % 4 == 0]  # shortages with 40 orders (all in the second half)
    FIGURES["oversize"] = {"set_aside": len(set_aside), "counter": counted, "log_lines": len(lines)}
    print(f"\n[oversize] {FIGURES['oversize']}\n  " + "\n  ".join(lines))
    assert len(set_aside) == len(big) and counted == len(big) and len(lines) == len(big)
    assert all(reason.startswith("too_large") for reason in set_aside)
    missing = reference - keys
    assert sum(missing.values()) == len(big)  # only the set-aside outputs are missing
    assert not keys - reference  # nothing extra, nothing doubled
    assert max(keys.values()) == 1


def test_no_password_in_any_log_the_suite_wrote(rig):
    """Every service log, the broker's and PostgreSQL's logs: no password, anywhere."""
    scanned, hits = 0, []
    for root in (rig.tmp, rig.pg.base):
        for path in Path(root).rglob("*"):
            if path.is_file() and (path.suffix in (".log", ".out") or "log" in path.name):
                scanned += 1
                data = path.read_bytes()
                for secret in (DB_PASSWORD, SMTP_PASSWORD):
                    if secret.encode() in data:
                        hits.append((str(path), secret[:4]))
    FIGURES["password_scan"] = {"files": scanned, "hits": len(hits)}
    print(f"\n[password scan] {scanned} files, {len(hits)} hits; figures: "
          f"{json.dumps({k: {kk: vv for kk, vv in v.items() if kk != 'lines'} for k, v in FIGURES.items()})}")
    assert scanned >= 6
    assert hits == []

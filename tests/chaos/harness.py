"""Plumbing of the crash tests: an order-determined workload, runs of `onevoice run` with kills and
PostgreSQL crashes placed by progress, and the comparison of two runs' outputs and state.

Why the workload is order-determined. Kafka orders messages only within a partition, so two runs
see the topics interleaved differently; a conflict that held only for a moment (opened, then
resolved by a withdrawal) may then exist in one run and not in the other, and a conflict alert's id
(derived from its causing event) depends on which of its two agreements came second. To compare
*every* output, resolved alerts included, the inputs are fed so that whatever interleaving the
consumer picks gives the same result (PLATFORM-NOTES "Ordering"):

* phase ``master``: `crm.accounts` alone (a dunning seen before its key account would be `proceed`);
* phase ``work``: agreements, dunnings, shortages and decisions. All agreement events go to partition 0
  of `erp.agreements`, so they are applied in publish order; dunnings (master data only), shortages
  (keyed by item: one partition per item) and decisions (for alerts that do not exist) do not interact
  with each other or with agreements, so their interleaving does not matter;
* phase ``promotions``: `erp.promotions`, also on partition 0, once every agreement is applied
  (a promotion undercuts a global price: the one cross-topic rule).

The kills and the PostgreSQL crashes happen during ``work``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from schemas.registry import INPUT_TOPICS
from services.devkit.workload import generate
from services.devkit.scenario_runner import OUTPUT_TOPICS, end_offsets, group_caught_up, read_outputs, start_group_at
from tests.support.postgres import PostgresCluster
from tests.support.service_process import ServiceProcess

PHASES = {"master": ("crm.accounts",),
          "work": ("erp.agreements", "finance.dunning", "erp.stock", "kam.decisions"),
          "promotions": ("erp.promotions",)}
ORDERED_TOPICS = ("erp.agreements", "erp.promotions")  # published to partition 0: applied in publish order
RUN_TIMEOUT_S = 600


def junk(prefix: str) -> list[tuple[str, bytes, bytes]]:
    """Twelve unusable messages for the dead-letter path (codes invalid_json, unknown_type, invalid_data)."""
    out = []
    for n in range(4):
        out.append(("erp.agreements", f"{prefix}-junk-{n}".encode(), b"{not json"))
        out.append(("erp.stock", f"{prefix}-junk-{n}".encode(), json.dumps(
            {"specversion": "1.0", "id": f"{prefix}-junk-t{n}", "source": "erp/x", "type": "stock.counted",
             "time": "2027-03-01T00:00:00Z", "data": {}}).encode()))
        out.append(("finance.dunning", f"{prefix}-junk-{n}".encode(), json.dumps(
            {"specversion": "1.0", "id": f"{prefix}-junk-d{n}", "source": "finance/dunning",
             "type": "dunning.triggered", "time": "2027-03-01T00:00:00Z",
             "data": {"dunning_id": f"{prefix}-junk-{n}", "account_id": "x", "invoice_id": "i", "level": "2",
                      "amount": 10, "currency": "EUR", "due_date": "2027-02-30", "proposed_action": "reminder"}}
        ).encode()))
    return out


@dataclass
class Workload:
    """What was published once for both runs: the input offsets before and after, per phase."""

    prefix: str
    messages: list[tuple[str, bytes, bytes]]
    start: dict[TopicPartition, int]
    end: dict[TopicPartition, int]

    def targets(self, phase: str) -> dict[TopicPartition, int]:
        return {tp: off for tp, off in self.end.items() if tp.topic in PHASES[phase]}

    def begin(self, phase: str) -> dict[TopicPartition, int]:
        return {tp: off for tp, off in self.start.items() if tp.topic in PHASES[phase]}

    def events_in(self, phase: str) -> int:
        return sum(self.targets(phase).values()) - sum(self.begin(phase).values())

    def mine(self, letter: dict) -> bool:
        tp = TopicPartition(letter["topic"], letter["partition"])
        return tp in self.start and self.start[tp] <= letter["offset"] < self.end[tp]


async def publish_workload(bootstrap: str, n_events: int, seed: int) -> Workload:
    prefix = f"c{uuid.uuid4().hex[:6]}"
    messages = generate(n_events, seed=seed, prefix=prefix) + junk(prefix)
    all_topics = [topic for topics in PHASES.values() for topic in topics]
    assert sorted(all_topics) == sorted(INPUT_TOPICS)
    start = await end_offsets(bootstrap, all_topics)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=20,
                                max_request_size=2 * 1024 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key, partition=0 if topic in ORDERED_TOPICS else None)
                   for topic, key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    end = await end_offsets(bootstrap, all_topics)
    assert sum(end.values()) - sum(start.values()) == len(messages), "someone else is publishing to the input topics"
    return Workload(prefix, messages, start, end)


# -- the store ------------------------------------------------------------------------------------------


def _scalar(engine, sql: str, patience: float = 60.0):
    """One value; None while the tables do not exist yet; waits out a restarting server."""
    deadline = time.monotonic() + patience
    while True:
        try:
            with engine.connect() as conn:
                return conn.execute(text(sql)).scalar()
        except ProgrammingError:  # tables not created yet
            return None
        except OperationalError:  # the server restarting
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def unsent(engine) -> int | None:
    return _scalar(engine, "SELECT count(*) FROM outbox WHERE sent_at IS NULL")


def applied(engine) -> int:
    """Inputs the store has recorded as applied (or dead-lettered): what the service has durably done."""
    return _scalar(engine, "SELECT count(*) FROM processed_events") or 0


def outbox_top(engine) -> int:
    """The highest outbox id handed out (published rows are deleted, so not max(id))."""
    return _scalar(engine, "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM outbox_id_seq") or 0


STATE_QUERIES = {
    "accounts": "SELECT * FROM accounts ORDER BY account_id",
    "team_members": "SELECT * FROM team_members ORDER BY account_id, person_id, role",
    "agreements": "SELECT * FROM agreements ORDER BY agreement_id",
    "promotions": "SELECT * FROM promotions ORDER BY promotion_id",
    "shortages": "SELECT * FROM shortages ORDER BY item_id",
    "processed_events": "SELECT source, event_id, digest FROM processed_events ORDER BY 1, 2",
    # every alert, resolved ones included; not the times, which are the wall clock's
    "alerts": "SELECT alert_id, fingerprint, rule, severity, status, key_account_id, account_id, evidence, assignee,"
              " recipients, caused_by, versions, closed_by_decision, escalated, awaiting_decision, ref_id"
              " FROM alerts ORDER BY alert_id",
    "alert_history": "SELECT alert_id, status, assignee, caused_by, decided_by FROM alert_history"
                     " ORDER BY alert_id, status, caused_by",
    "notices": "SELECT notice_id, kind, key_account_id, account_id, about, recipients, caused_by FROM notices"
               " ORDER BY notice_id",
    "decision_outcomes": "SELECT source, event_id, alert_id, status, code FROM decision_outcomes ORDER BY 1, 2",
}


def snapshot(engine) -> dict[str, list[tuple]]:
    with engine.connect() as conn:
        return {name: [tuple(r) for r in conn.execute(text(sql))] for name, sql in STATE_QUERIES.items()}


# -- one run --------------------------------------------------------------------------------------------


@dataclass
class Disruption:
    """One SIGKILL of the service or crash of PostgreSQL, and the proof that it landed while work was in flight."""

    kind: str  # "kill" | "postgres"
    at_s: float  # seconds into the work phase
    applied_at: int  # inputs applied (processed_events) when it struck
    applied_before_incarnation: int  # ... when the incarnation it struck started working
    outbox_at: int  # highest outbox id then
    applied_final: int = 0  # when the work phase was done
    outbox_final: int = 0
    away_s: float = 0.0

    @property
    def in_flight(self) -> bool:
        """Work remained (inputs applied and outputs written after it), and the struck incarnation was working."""
        return (self.applied_before_incarnation < self.applied_at < self.applied_final
                and self.outbox_at < self.outbox_final)

    def line(self) -> str:
        return (f"{self.kind:8} t={self.at_s:5.1f}s applied {self.applied_at:,}/{self.applied_final:,} "
                f"(incarnation began at {self.applied_before_incarnation:,}), outbox id {self.outbox_at:,}/"
                f"{self.outbox_final:,}{f', away {self.away_s:.1f}s' if self.away_s else ''}"
                f" -> {'in flight' if self.in_flight else 'NOT IN FLIGHT'}")


@dataclass
class Run:
    label: str
    seconds: float = 0.0
    work_s: float = 0.0
    disruptions: list[Disruption] = field(default_factory=list)
    outputs: dict[str, list[dict]] = field(default_factory=dict)
    state: dict[str, list[tuple]] = field(default_factory=dict)


def schedule(kills: int, restarts: int) -> list[str]:
    """Kills with the PostgreSQL crashes spread among them: e.g. 5 and 1 -> kill kill kill postgres kill kill."""
    plan = ["kill"] * kills
    for n in range(restarts):
        plan.insert((n + 1) * len(plan) // (restarts + 1) + n, "postgres")
    return plan


async def _wait_finished(service: ServiceProcess, admin, group: str, targets: dict, engine,
                         timeout: float = RUN_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            raise AssertionError(f"service exited with {service.proc.returncode}; log:\n{service.tail()}")
        if await group_caught_up(admin, group, targets) and await asyncio.to_thread(unsent, engine) == 0:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"service did not finish within {timeout}s; log:\n{service.tail()}")


async def run_once(label: str, *, bootstrap: str, cluster: PostgresCluster, tmp_path: Path, workload: Workload,
                   kills: int = 0, restarts: int = 0, seed: int = 0) -> Run:
    """Consume the workload phase by phase into a fresh database; during ``work`` strike `kills` SIGKILLs and
    `restarts` PostgreSQL crashes, each once the applied inputs pass the next of evenly spaced marks."""
    rng = random.Random(seed)
    run = Run(label)
    group = f"chaos-{label}-{uuid.uuid4().hex[:8]}"
    name = f"chaos_{label}_{uuid.uuid4().hex[:8]}"
    admin_engine = create_engine(cluster.url.replace("postgresql://", "postgresql+psycopg://"),
                                 isolation_level="AUTOCOMMIT", pool_pre_ping=True)  # outlives the crashes
    with admin_engine.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = cluster.url.rsplit("/", 1)[0] + f"/{name}"
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"), pool_pre_ping=True)
    env = {**os.environ, "ONEVOICE_KAFKA_BOOTSTRAP": bootstrap, "ONEVOICE_DATABASE_URL": url,
           "ONEVOICE_GROUP_ID": group, "ONEVOICE_DECISION_WINDOW_S": "31536000", "ONEVOICE_PARTITIONS": "6",
           "ONEVOICE_METRICS_PORT": "0", "PYTHONUNBUFFERED": "1",
           # a killed member leaves the group (and the relay lease) in seconds, not the default 10 s
           "ONEVOICE_SESSION_TIMEOUT_MS": "6000", "ONEVOICE_RELAY_LEASE_S": "3",
           # batches of at most 500 (not 2,000): more commits and relay rounds to land in, and an incarnation
           # after a restart has passed the next mark after a batch or two
           "ONEVOICE_MAX_BATCH": "500"}
    service = ServiceProcess(env, tmp_path / f"{label}.log")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    output_start = await end_offsets(bootstrap, OUTPUT_TOPICS)
    began = time.monotonic()
    try:
        everything_at_end = dict(workload.end)
        await start_group_at(bootstrap, group, {**everything_at_end, **workload.begin("master")})
        for phase in PHASES:
            if phase != "master":
                await start_group_at(bootstrap, group, workload.begin(phase))
            targets = workload.targets(phase)
            phase_began = time.monotonic()
            service.start()
            if phase == "work":
                async def done() -> bool:
                    return (await group_caught_up(admin, group, targets)
                            and await asyncio.to_thread(unsent, engine) == 0)
                await _disrupt(run, service, cluster, engine, workload, schedule(kills, restarts), rng, done)
            await _wait_finished(service, admin, group, targets, engine)
            assert service.terminate() == 0, service.tail()
            if phase == "work":  # the proof of each disruption: work of this phase remained after it
                run.work_s = time.monotonic() - phase_began
                work_applied, work_top = applied(engine), outbox_top(engine)
                for d in run.disruptions:
                    d.applied_final, d.outbox_final = work_applied, work_top
        run.seconds = time.monotonic() - began
        run.outputs = await read_outputs(bootstrap, output_start)
        run.state = await asyncio.to_thread(snapshot, engine)
    finally:
        if service.alive():
            service.kill()
        await admin.close()
        engine.dispose()
        with admin_engine.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin_engine.dispose()
    return run


async def _disrupt(run: Run, service: ServiceProcess, cluster: PostgresCluster, engine, workload: Workload,
                   plan: list[str], rng: random.Random, done) -> None:
    """Strike each disruption of `plan` once the applied inputs pass its mark (the work phase split evenly)."""
    if not plan:
        return
    base = await asyncio.to_thread(applied, engine)
    total = workload.events_in("work")
    began = time.monotonic()
    incarnation_start = base
    for n, kind in enumerate(plan):
        mark = base + total * (n + 1) // (len(plan) + 1)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:  # until the mark is passed by this incarnation's own work
            now = await asyncio.to_thread(applied, engine)
            if now >= mark and now > incarnation_start:
                break
            if not service.alive():
                raise AssertionError(f"service exited with {service.proc.returncode}:\n{service.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no progress to {mark} within {RUN_TIMEOUT_S}s:\n{service.tail()}")
            if await done():
                raise AssertionError(f"the work was done before disruption {n + 1} of {len(plan)} ({kind}) could "
                                     f"strike: {now:,} inputs applied, mark {mark:,}")
            await asyncio.sleep(0.05)
        await asyncio.sleep(rng.uniform(0.0, 0.3))  # somewhere in a batch, a commit or the relay
        if kind == "kill":
            service.kill()  # nothing of this process runs after this line: what it applied is final
            at, top = await asyncio.to_thread(applied, engine), await asyncio.to_thread(outbox_top, engine)
            run.disruptions.append(Disruption("kill", time.monotonic() - began, at, incarnation_start, top))
            incarnation_start = at
            service.start()
        else:
            at, top = await asyncio.to_thread(applied, engine), await asyncio.to_thread(outbox_top, engine)
            away = await asyncio.to_thread(cluster.restart, "immediate")
            run.disruptions.append(Disruption("postgres", time.monotonic() - began, at, incarnation_start, top,
                                              away_s=away))
            incarnation_start = await asyncio.to_thread(applied, engine)


# -- comparison ---------------------------------------------------------------------------------------------


def output_keys(run: Run, workload: Workload) -> dict[str, Counter]:
    """Every output of this workload, by what identifies it (CONTRACT §6 "Delivery"), counted."""
    prefix = workload.prefix
    out = run.outputs
    return {
        "alerts": Counter((a["alert_id"], a["status"]) for a in out["kam.alerts"]
                          if a["key_account_id"].startswith(prefix)),
        "instructions": Counter((i["instruction_id"], i["ref_id"], i["action"], json.dumps(i["allocation"]),
                                 i["account_id"], i["key_account_id"]) for i in out["kam.instructions"]
                                if i["ref_id"].startswith(prefix)),
        "notices": Counter((n["notice_id"], n["kind"], n["about"], tuple(n["recipients"]), n["caused_by"])
                           for n in out["kam.notices"] if n["key_account_id"].startswith(prefix)),
        "dead letters": Counter((d["topic"], d["partition"], d["offset"], d["error"]["code"])
                                for d in out["kam.dlq"] if workload.mine(d)),
    }


def duplicates(keys: dict[str, Counter]) -> dict[str, list]:
    return {kind: sorted(k for k, n in counter.items() if n > 1) for kind, counter in keys.items()}


def lost_and_extra(reference: dict[str, Counter], crash: dict[str, Counter]) -> tuple[dict, dict]:
    lost = {kind: sorted(set(reference[kind]) - set(crash[kind])) for kind in reference}
    extra = {kind: sorted(set(crash[kind]) - set(reference[kind])) for kind in reference}
    return lost, extra


def unpublished(run: Run, keys: dict[str, Counter]) -> dict[str, list]:
    """What the run's own store says happened but no message told: every alert status change (history) and
    every notice."""
    published_alerts = {k for k in keys["alerts"]}
    published_notices = {k[0] for k in keys["notices"]}
    return {"alert status changes": sorted({(row[0], row[1]) for row in run.state["alert_history"]}
                                           - published_alerts),
            "notices": sorted({row[0] for row in run.state["notices"]} - published_notices)}


def diff(a, b, limit: int = 5) -> str:
    a, b = Counter(a), Counter(b)
    return (f"only in reference: {list((a - b).elements())[:limit]}; "
            f"only in crash run: {list((b - a).elements())[:limit]}")

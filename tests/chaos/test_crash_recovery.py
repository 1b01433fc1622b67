"""Crash recovery: `onevoice run` SIGKILLed again and again ends in the same state and loses no output.

Setup. ~20,000 events of `bench/workload.py` (fresh id prefix) plus a dozen unusable messages
(dead letters) are published once to the real broker. Two runs then consume exactly those
input offsets, each with its own consumer group (started at the offsets captured before
publishing, via `start_group_at`) and its own fresh PostgreSQL database, each with
`onevoice run` as a subprocess:

* reference: one process runs until the group's committed offsets reach the end of the
  input and the outbox holds no unsent row, then gets SIGTERM;
* crash: the same, but the process is SIGKILLed at least `MIN_KILLS` times and restarted
  each time. A kill happens 0.5–4 s (seeded random) after the incarnation has shown
  progress (a committed offset or a relayed output moved), so kills land mid-batch, between
  DB commit and offset commit, and in the relay between publish and "mark sent". A killed
  member stays in the group until its session times out (~10 s), so each restart first waits
  for that rebalance (and for the relay lease, 10 s).

Phasing. Both runs first consume only the master data (`crm.accounts`; the group starts with
the other topics at their end), are stopped cleanly, and then their group is rewound on the
other topics and the rest is consumed. Without that, how much master data the service has
seen when a dunning or a shortage arrives would depend on the cross-topic interleaving: a
dunning processed before its key account is known yields `proceed` instead of `hold`, quite
correctly, and the two runs would differ for reasons that have nothing to do with crashes.
(The master-data phase runs without kills in both runs.)

What is compared, and why:

1. Durable state, exactly: `accounts`, `team_members`, `agreements`, `promotions`,
   `shortages` (every column) and the set of `processed_events` (dedup keys: nothing
   accepted may be forgotten or applied twice).
2. Alerts in the database: the multiset of (fingerprint, status, rule, severity, assignee)
   of the *open* alerts (status not resolved/waived) must be equal. Batch boundaries differ
   between the runs, so a conflict that held only for a moment (e.g. a local price below a
   global one, both later withdrawn) may have produced a resolved alert in one run and none
   in the other; resolved rows are therefore only reported, not asserted. Alerts whose
   `alert_id` does not depend on batching (dunning and stock alerts: the id is derived from
   the fingerprint and the causing event) are compared by (alert_id, status) exactly.
3. Published outputs (read with `read_outputs` between the output-topic offsets captured
   before and after each run, filtered to this run's ids). **Lost** counts:
   * every alert row of the crash database whose (alert_id, "open") or (alert_id, current
     status) was never published in the crash run (the DB says it changed, nobody was told);
   * every (fingerprint, status) of the reference's final open alerts not published in the
     crash run;
   * every published (alert_id, status) of a dunning/stock alert of the reference not
     published in the crash run;
   * every instruction of the reference (by `instruction_id`, which is derived from the
     causing event, so it is the same in both runs — and with the same ref_id, action and
     allocation) not published in the crash run;
   * every dead letter of the reference (input topic, partition, offset, code) not
     published in the crash run.
   Lost must be 0. **Duplicates** are messages published more than once for the same
   (alert_id, status) / instruction_id / dead-letter input coordinates; the contract's goal
   is 0, but a crash between publishing and marking a row sent repeats it, so they are
   printed, not asserted. Extra outputs (in the crash run but not in the reference) are
   printed as well.

Tunables (environment): ONEVOICE_CHAOS_EVENTS (20000), ONEVOICE_CHAOS_KILLS (5),
ONEVOICE_CHAOS_SEED (20271).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from bench.workload import generate
from consumers.topics import ensure_topics
from schemas.registry import INPUT_TOPICS
from services.scenario_runner import OUTPUT_TOPICS, end_offsets, group_caught_up, read_outputs, start_group_at
from tests.support.service_process import ServiceProcess

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.postgres, pytest.mark.timeout(900)]

N_EVENTS = int(os.environ.get("ONEVOICE_CHAOS_EVENTS", "20000"))
MIN_KILLS = int(os.environ.get("ONEVOICE_CHAOS_KILLS", "5"))
SEED = int(os.environ.get("ONEVOICE_CHAOS_SEED", "20271"))
MASTER_TOPIC = "crm.accounts"
CLOSED = ("resolved", "waived")
STABLE_ID_RULES = ("key_account_dunning", "scarce_stock_allocation")
STATE_TABLES = {"accounts": "account_id", "team_members": "account_id, person_id, role",
                "agreements": "agreement_id", "promotions": "promotion_id", "shortages": "item_id"}
RUN_TIMEOUT_S = 300


def junk(prefix: str) -> list[tuple[str, bytes, bytes]]:
    """Unusable messages for the dead-letter path (codes invalid_json, unknown_type, invalid_data)."""
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


# -- infrastructure -------------------------------------------------------------------------------


@contextmanager
def fresh_database(postgres_url: str):
    name = f"chaos_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"), pool_pre_ping=True)
    try:
        yield url, engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def unsent(engine) -> int | None:
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM outbox WHERE sent_at IS NULL")).scalar()
    except DBAPIError:  # tables not created yet
        return None


def sent(engine) -> int:
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL")).scalar()
    except DBAPIError:
        return 0


async def committed_total(admin: AIOKafkaAdminClient, group: str, targets: dict) -> int:
    committed = await admin.list_consumer_group_offsets(group)
    return sum(committed[tp].offset for tp in targets if tp in committed and committed[tp])


async def finished(admin, group, targets, engine) -> bool:
    return await group_caught_up(admin, group, targets) and await asyncio.to_thread(unsent, engine) == 0


async def wait_finished(service: ServiceProcess, admin, group, targets, engine, timeout: float = RUN_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            raise AssertionError(f"service exited with {service.proc.returncode}; log:\n{service.tail()}")
        if await finished(admin, group, targets, engine):
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"service did not finish within {timeout}s; log:\n{service.tail()}")


# -- one run ----------------------------------------------------------------------------------------


async def run_once(label: str, *, bootstrap: str, postgres_url: str, tmp_path: Path, start: dict, end: dict,
                   prefix: str, kills: int, rng: random.Random) -> dict:
    group = f"chaos-{label}-{uuid.uuid4().hex[:8]}"
    master_end = {tp: off for tp, off in end.items() if tp.topic == MASTER_TOPIC}
    others_start = {tp: off for tp, off in start.items() if tp.topic != MASTER_TOPIC}
    with fresh_database(postgres_url) as (url, engine):
        env = {**os.environ, "ONEVOICE_KAFKA_BOOTSTRAP": bootstrap, "ONEVOICE_DATABASE_URL": url,
               "ONEVOICE_GROUP_ID": group, "ONEVOICE_DECISION_WINDOW_S": "31536000", "ONEVOICE_PARTITIONS": "6",
               "ONEVOICE_METRICS_PORT": "0", "PYTHONUNBUFFERED": "1",
               # a killed member leaves the group (and the relay lease) in seconds, not the default 10 s
               "ONEVOICE_SESSION_TIMEOUT_MS": "6000", "ONEVOICE_RELAY_LEASE_S": "3"}
        service = ServiceProcess(env, tmp_path / f"{label}.log")
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        output_start = await end_offsets(bootstrap, OUTPUT_TOPICS)
        began = time.monotonic()
        kill_log: list[str] = []
        try:
            # phase 1: master data only (the other topics start at their end), then a clean stop
            await start_group_at(bootstrap, group, {**start, **{tp: end[tp] for tp in others_start}})
            service.start()
            await wait_finished(service, admin, group, master_end, engine)
            assert service.terminate() == 0, service.tail()
            master_s = time.monotonic() - began

            # phase 2: rewind the other topics; the rest of the workload, with kills in the crash run
            await start_group_at(bootstrap, group, others_start)
            phase2 = time.monotonic()
            service.start()
            kills_during_work = 0
            for n in range(kills):
                before = (await committed_total(admin, group, end), await asyncio.to_thread(sent, engine))
                waited = time.monotonic()
                while time.monotonic() - waited < 30:  # until this incarnation does something
                    now = (await committed_total(admin, group, end), await asyncio.to_thread(sent, engine))
                    if now != before or await finished(admin, group, end, engine):
                        break
                    if not service.alive():
                        raise AssertionError(f"service exited with {service.proc.returncode}:\n{service.tail()}")
                    await asyncio.sleep(0.1)
                delay = rng.uniform(0.2, 1.5)  # short enough that the kills land while there is work
                await asyncio.sleep(delay)
                done = await finished(admin, group, end, engine)
                kills_during_work += not done
                progress = await committed_total(admin, group, end) - sum(start.values())
                service.kill()
                kill_log.append(f"kill {n + 1}: {delay:.2f}s after progress, {progress} input offsets committed, "
                                f"{'after' if done else 'before'} completion, t={time.monotonic() - phase2:.1f}s")
                service.start()
            await wait_finished(service, admin, group, end, engine)
            assert service.terminate() == 0, service.tail()
            seconds = time.monotonic() - began
        finally:
            if service.alive():
                service.kill()
            await admin.close()
        outputs = await read_outputs(bootstrap, output_start)
        state = await asyncio.to_thread(snapshot, engine)
    mine = _mine(start, end)
    return {"label": label, "seconds": seconds, "master_s": master_s, "phase2_s": seconds - master_s,
            "kills": len(kill_log), "kills_during_work": kills_during_work, "kill_log": kill_log,
            "alerts": [a for a in outputs["kam.alerts"] if a["key_account_id"].startswith(prefix)],
            "instructions": [i for i in outputs["kam.instructions"] if i["ref_id"].startswith(prefix)],
            "dlq": [d for d in outputs["kam.dlq"] if mine(d)], **state}


def _mine(start, end):
    def check(letter: dict) -> bool:
        tp = TopicPartition(letter["topic"], letter["partition"])
        return tp in start and start[tp] <= letter["offset"] < end[tp]
    return check


def snapshot(engine) -> dict:
    state = {}
    with engine.connect() as conn:
        for table, order in STATE_TABLES.items():
            state[table] = [tuple(r) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY {order}"))]
        rows = conn.execute(text("SELECT source, event_id FROM processed_events"))
        state["processed_events"] = {tuple(r) for r in rows}
        state["alert_rows"] = [dict(r._mapping) for r in conn.execute(text(
            "SELECT alert_id, fingerprint, status, rule, severity, assignee FROM alerts"))]
    return state


# -- comparison -------------------------------------------------------------------------------------


def alert_tuple(a: dict) -> tuple:
    return (a["fingerprint"], a["status"], a["rule"], a["severity"], a["assignee"])


def duplicates(run: dict) -> dict[str, int]:
    def extra(counter: Counter) -> int:
        return sum(n - 1 for n in counter.values() if n > 1)
    return {"alerts": extra(Counter((a["alert_id"], a["status"]) for a in run["alerts"])),
            "instructions": extra(Counter(i["instruction_id"] for i in run["instructions"])),
            "dlq": extra(Counter((d["topic"], d["partition"], d["offset"]) for d in run["dlq"]))}


def lost_outputs(ref: dict, crash: dict) -> dict[str, list]:
    published = {(a["alert_id"], a["status"]) for a in crash["alerts"]}
    published_fp = {(a["fingerprint"], a["status"]) for a in crash["alerts"]}
    lost: dict[str, list] = {}
    lost["crash alert rows never published"] = sorted(
        (row["alert_id"], status, row["fingerprint"]) for row in crash["alert_rows"]
        for status in {"open", row["status"]} if (row["alert_id"], status) not in published)
    lost["reference open alerts not published in crash run"] = sorted(
        (row["fingerprint"], row["status"]) for row in ref["alert_rows"]
        if row["status"] not in CLOSED and (row["fingerprint"], row["status"]) not in published_fp)
    lost["dunning/stock alert statuses"] = sorted(
        {(a["alert_id"], a["status"], a["fingerprint"]) for a in ref["alerts"] if a["rule"] in STABLE_ID_RULES}
        - {(a["alert_id"], a["status"], a["fingerprint"]) for a in crash["alerts"]})
    crash_instructions = {i["instruction_id"]: i for i in crash["instructions"]}
    lost["instructions"] = sorted(
        (i["instruction_id"], i["ref_id"], i["action"]) for i in ref["instructions"]
        if i["instruction_id"] not in crash_instructions
        or _instruction(crash_instructions[i["instruction_id"]]) != _instruction(i))
    lost["dead letters"] = sorted({_letter(d) for d in ref["dlq"]} - {_letter(d) for d in crash["dlq"]})
    return lost


def _instruction(i: dict) -> tuple:
    return (i["ref_id"], i["action"], json.dumps(i["allocation"]), i["account_id"], i["key_account_id"])


def _letter(d: dict) -> tuple:
    return (d["topic"], d["partition"], d["offset"], d["error"]["code"])


def extras(ref: dict, crash: dict) -> dict[str, int]:
    return {"instructions": len({i["instruction_id"] for i in crash["instructions"]}
                                - {i["instruction_id"] for i in ref["instructions"]}),
            "dead letters": len({_letter(d) for d in crash["dlq"]} - {_letter(d) for d in ref["dlq"]}),
            "dunning/stock alert statuses": len(
                {(a["alert_id"], a["status"]) for a in crash["alerts"] if a["rule"] in STABLE_ID_RULES}
                - {(a["alert_id"], a["status"]) for a in ref["alerts"] if a["rule"] in STABLE_ID_RULES})}


def _diff(a, b, limit: int = 10) -> str:
    a, b = Counter(a), Counter(b)
    return (f"only in reference: {list((a - b).elements())[:limit]}; "
            f"only in crash run: {list((b - a).elements())[:limit]}")


# -- the test -----------------------------------------------------------------------------------------


async def test_sigkill_crash_recovery_matches_reference(kafka_bootstrap, postgres_url, tmp_path):
    rng = random.Random(SEED)
    prefix = f"c{uuid.uuid4().hex[:6]}"
    began = time.monotonic()
    workload = generate(N_EVENTS, seed=SEED, prefix=prefix)
    master = [m for m in workload if m[0] == MASTER_TOPIC]
    rest = [m for m in workload if m[0] != MASTER_TOPIC] + junk(prefix)

    await ensure_topics(kafka_bootstrap, 6)
    start = await end_offsets(kafka_bootstrap, INPUT_TOPICS)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True, linger_ms=20,
                                max_request_size=2 * 1024 * 1024)
    await producer.start()
    try:
        for batch in (master, rest):
            futures = [await producer.send(topic, value, key=key) for topic, key, value in batch]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    end = await end_offsets(kafka_bootstrap, INPUT_TOPICS)
    published = sum(end.values()) - sum(start.values())
    assert published == len(master) + len(rest), "someone else is publishing to the input topics"
    publish_s = time.monotonic() - began

    common = dict(bootstrap=kafka_bootstrap, postgres_url=postgres_url, tmp_path=tmp_path, start=start, end=end,
                  prefix=prefix)
    ref = await run_once("reference", kills=0, rng=rng, **common)
    crash = await run_once("crash", kills=MIN_KILLS, rng=rng, **common)

    lost = lost_outputs(ref, crash)
    n_lost = sum(len(v) for v in lost.values())
    dup_ref, dup_crash = duplicates(ref), duplicates(crash)
    extra = extras(ref, crash)
    open_ref = Counter(alert_tuple(a) for a in ref["alert_rows"] if a["status"] not in CLOSED)
    open_crash = Counter(alert_tuple(a) for a in crash["alert_rows"] if a["status"] not in CLOSED)
    all_ref, all_crash = Counter(map(alert_tuple, ref["alert_rows"])), Counter(map(alert_tuple, crash["alert_rows"]))
    transient = sum(((all_ref - all_crash) + (all_crash - all_ref)).values())

    for line in crash["kill_log"]:
        print("  " + line)
    print(f"  reference: {len(ref['alerts'])} alert messages, {len(ref['instructions'])} instructions, "
          f"{len(ref['dlq'])} dead letters, {len(ref['alert_rows'])} alert rows ({sum(open_ref.values())} open) "
          f"by rule {dict(Counter(a['rule'] for a in ref['alert_rows']))}")
    print(f"  crash:     {len(crash['alerts'])} alert messages, {len(crash['instructions'])} instructions, "
          f"{len(crash['dlq'])} dead letters, {len(crash['alert_rows'])} alert rows ({sum(open_crash.values())} open)")
    for what, items in lost.items():
        if items:
            print(f"  LOST {what}: {len(items)}, e.g. {items[:5]}")
    print(f"CHAOS events={published} kills={crash['kills']} (during work: {crash['kills_during_work']}) "
          f"lost={n_lost} duplicates={sum(dup_crash.values())} {dup_crash} (reference: {sum(dup_ref.values())}) "
          f"extra={extra} transient_alert_rows_differing={transient} "
          f"publish={publish_s:.1f}s reference={ref['seconds']:.1f}s (master {ref['master_s']:.1f}s) "
          f"crash={crash['seconds']:.1f}s (master {crash['master_s']:.1f}s) total={time.monotonic() - began:.1f}s")

    decisions = {(e["source"], e["id"]) for e in map(json.loads, (v for t, _, v in workload if t == "kam.decisions"))}
    assert len(ref["alerts"]) > 100 and len(ref["instructions"]) > 100
    assert len({_letter(d) for d in ref["dlq"]}) == 12 + len(decisions)  # junk + decisions on unknown alerts
    for table in STATE_TABLES:
        assert ref[table] == crash[table], f"{table} differs: {_diff(ref[table], crash[table])}"
    assert ref["processed_events"] == crash["processed_events"], _diff(ref["processed_events"],
                                                                       crash["processed_events"])
    assert open_ref == open_crash, f"open alerts differ: {_diff(open_ref, open_crash)}"
    stable_ref = Counter((a["alert_id"], a["status"]) for a in ref["alert_rows"] if a["rule"] in STABLE_ID_RULES)
    stable_crash = Counter((a["alert_id"], a["status"]) for a in crash["alert_rows"] if a["rule"] in STABLE_ID_RULES)
    assert stable_ref == stable_crash, f"dunning/stock alerts differ: {_diff(stable_ref, stable_crash)}"
    assert crash["kills"] >= MIN_KILLS
    assert n_lost == 0, {k: v[:10] for k, v in lost.items() if v}

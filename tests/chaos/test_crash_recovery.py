"""Crash recovery: `onevoice run` SIGKILLed again and again, and its PostgreSQL crashed under it, while it
works, loses nothing and repeats nothing (README "Nothing lost, nothing doubled"; CONTRACT §6 "Delivery").

The workload (`services/devkit/workload/`, a fresh id prefix, plus twelve unusable messages) is
published once and consumed twice, each run with its own consumer group and its own database on a
PostgreSQL cluster of this module (default durability; it is crashed, so the session's shared server
will not do), in three phases that make the result independent of how the consumer interleaves the
topics (tests/chaos/harness.py):

* reference: `onevoice run` undisturbed;
* crash: the same, but during the work phase the service is SIGKILLed and restarted, and PostgreSQL
  is stopped as if it crashed (`pg_ctl stop -m immediate`, no checkpoint) and started again, each time
  the applied inputs pass the next of evenly spaced marks, plus 0–0.3 s (seeded), so they land in a
  batch, between a database commit and the offset commit, or in the relay between publishing and
  marking sent. A killed member stays in the group until its session times out (6 s).

Asserted:

1. Every disruption landed while work was in flight: the incarnation it struck had applied inputs, and
   more inputs were applied and more outputs written after it (`processed_events`, outbox ids).
2. Outputs, by what identifies them: alerts by (alert_id, status) — resolved ones too —, instructions
   (id and content), notices (id and content), dead letters (input coordinates and code). Lost (in the
   reference, not in the crash run), extra (the other way round) and duplicates (published twice, in
   either run) are all 0; every alert status change and every notice the crash run's store recorded
   was published.
3. State, exactly: accounts, team members, agreements, promotions, shortages, the applied inputs, every
   alert (resolved ones too; all but the wall-clock times), alert history, notices, decision outcomes.

The reference is the same service, undisturbed: what is compared is crash recovery, not the rules
(those are checked against hand-written expectations and the shared scenarios elsewhere).

Default run: 20,000 events, 5 kills and 1 PostgreSQL crash. The long suite (`-m long`): 100,000
events, 10 kills and 2 PostgreSQL crashes. Tunables (environment): ONEVOICE_CHAOS_EVENTS,
ONEVOICE_CHAOS_KILLS, ONEVOICE_CHAOS_PG_RESTARTS, ONEVOICE_CHAOS_SEED (20271).
"""

from __future__ import annotations

import os
import time

import pytest

from consumers.topics import ensure_topics
from tests.chaos.harness import (diff, duplicates, lost_and_extra, output_keys, publish_workload, run_once,
                                 unpublished)
from tests.support.postgres import PostgresUnavailable, start_cluster

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.postgres]

SEED = int(os.environ.get("ONEVOICE_CHAOS_SEED", "20271"))


@pytest.fixture(scope="module")
def cluster():
    """A durable PostgreSQL cluster of this module's own, which the crash run crashes and restarts."""
    try:
        cluster = start_cluster()
    except PostgresUnavailable as exc:
        pytest.fail(f"the crash tests need PostgreSQL server binaries: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


def _env(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


async def crash_and_compare(bootstrap, cluster, tmp_path, *, events: int, kills: int, restarts: int) -> None:
    began = time.monotonic()
    await ensure_topics(bootstrap, 6)
    workload = await publish_workload(bootstrap, events, SEED)
    publish_s = time.monotonic() - began
    common = dict(bootstrap=bootstrap, cluster=cluster, tmp_path=tmp_path, workload=workload)
    ref = await run_once("reference", **common)
    crash = await run_once("crash", kills=kills, restarts=restarts, seed=SEED, **common)

    ref_keys, crash_keys = output_keys(ref, workload), output_keys(crash, workload)
    lost, extra = lost_and_extra(ref_keys, crash_keys)
    dup_ref, dup_crash = duplicates(ref_keys), duplicates(crash_keys)
    silent = unpublished(crash, crash_keys)
    resolved = sum(1 for row in ref.state["alerts"] if row[4] == "resolved")

    for d in crash.disruptions:
        print("  " + d.line())
    counts = {kind: sum(c.values()) for kind, c in crash_keys.items()}
    print(f"CHAOS events={len(workload.messages)} kills={sum(d.kind == 'kill' for d in crash.disruptions)} "
          f"postgres_crashes={sum(d.kind == 'postgres' for d in crash.disruptions)} "
          f"in_flight={sum(d.in_flight for d in crash.disruptions)}/{len(crash.disruptions)} "
          f"lost={sum(map(len, lost.values()))} extra={sum(map(len, extra.values()))} "
          f"duplicates={sum(map(len, dup_crash.values()))} (reference {sum(map(len, dup_ref.values()))}) "
          f"outputs={counts} resolved_alerts={resolved} alerts_in_store={len(ref.state['alerts'])} "
          f"publish={publish_s:.1f}s reference={ref.seconds:.1f}s (work {ref.work_s:.1f}s) "
          f"crash={crash.seconds:.1f}s (work {crash.work_s:.1f}s) total={time.monotonic() - began:.1f}s")

    # the workload exercises every kind of output, resolved alerts included
    assert all(sum(ref_keys[kind].values()) > 50 for kind in ("alerts", "instructions", "notices")), counts
    assert sum(ref_keys["dead letters"].values()) >= 12, counts  # the junk, and decisions on unknown alerts
    assert resolved > 10, resolved
    # 1. every disruption struck while work was in flight
    assert sum(d.kind == "kill" for d in crash.disruptions) == kills
    assert sum(d.kind == "postgres" for d in crash.disruptions) == restarts
    assert all(d.in_flight for d in crash.disruptions), [d.line() for d in crash.disruptions if not d.in_flight]
    # 2. nothing lost, nothing doubled, nothing extra, nothing recorded but untold
    assert not any(dup_ref.values()), {k: v[:5] for k, v in dup_ref.items() if v}
    assert not any(dup_crash.values()), {k: v[:5] for k, v in dup_crash.items() if v}
    assert not any(lost.values()), {k: v[:5] for k, v in lost.items() if v}
    assert not any(extra.values()), {k: v[:5] for k, v in extra.items() if v}
    assert not any(silent.values()), {k: v[:5] for k, v in silent.items() if v}
    # 3. the same state, every alert included
    for table, rows in ref.state.items():
        assert rows == crash.state[table], f"{table} differs: {diff(rows, crash.state[table])}"


@pytest.mark.timeout(900)
async def test_sigkills_and_a_database_crash_while_working_lose_and_repeat_nothing(kafka_bootstrap, cluster,
                                                                                    tmp_path):
    await crash_and_compare(kafka_bootstrap, cluster, tmp_path, events=_env("ONEVOICE_CHAOS_EVENTS", 20_000),
                            kills=_env("ONEVOICE_CHAOS_KILLS", 5), restarts=_env("ONEVOICE_CHAOS_PG_RESTARTS", 1))


@pytest.mark.long
@pytest.mark.timeout(3600)
async def test_long_run_of_sigkills_and_database_crashes_loses_and_repeats_nothing(kafka_bootstrap, cluster,
                                                                                   tmp_path):
    await crash_and_compare(kafka_bootstrap, cluster, tmp_path, events=100_000, kills=10, restarts=2)

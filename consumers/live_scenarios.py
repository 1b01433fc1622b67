"""Run a worked scenario through a real broker and a running service, and collect what it published.

Each run gets its own consumer group whose offsets start at the current end of the input
topics, so earlier messages on a shared broker do not leak in, and its own database.
Used by `onevoice demo` and the end-to-end tests; publishing modes, offsets and reading the
outputs are services/devkit/scenario_runner.py's.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field

from consumers.service import Service
from consumers.topics import ensure_topics
from schemas.registry import INPUT_TOPICS
from services import kafka_clients
from services.config import Settings
from services.devkit.scenario_runner import (OUTPUT_TOPICS, PublishMode, ScenarioPublisher, end_offsets,
                                             group_caught_up, read_outputs, start_group_at)
from services.scenarios import decision_event, summarise
from services.store import tables as t


@dataclass
class ScenarioRun:
    name: str
    summary: dict
    alerts: list[dict] = field(default_factory=list)
    instructions: list[dict] = field(default_factory=list)
    dead_letters: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    notices: list[dict] = field(default_factory=list)
    #: messages sent per way: "as written", "sdk binary", "sdk structured"
    modes: Counter = field(default_factory=Counter)


async def run_scenario_live(scenario: dict, *, bootstrap: str, database_url: str, group_id: str,
                            timeout_s: float = 60.0, partitions: int = 6, kafka: Settings | None = None,
                            service_kafka: Settings | None = None, mode: PublishMode = "structured",
                            seed: int = 0) -> ScenarioRun:
    """Publish the scenario's steps one after the other, each once the service has caught up with the last.

    `mode` is the publishing mode (services/devkit/scenario_runner.py), `seed` chooses the content modes in ``mixed``.
    The summary holds kam.notices too: a scenario expects exactly its `expect.notices`.

    On a secured cluster, `kafka` carries the Kafka security settings of the runner's own clients (a
    principal that may publish the inputs and decisions and read the outputs) and `service_kafka` those
    of the service (default: the same).
    """
    started = time.monotonic()
    publisher = ScenarioPublisher(mode, seed)
    service_security = (service_kafka or kafka).kafka_security() if (service_kafka or kafka) else {}
    if kafka is not None:  # from here on `bootstrap` is the runner's client settings (services/kafka_clients.py)
        bootstrap = kafka.model_copy(update={"kafka_bootstrap": bootstrap})
    await ensure_topics(bootstrap, partitions)
    input_ends = await end_offsets(bootstrap, INPUT_TOPICS)
    await start_group_at(bootstrap, group_id, input_ends)
    output_start = await end_offsets(bootstrap, OUTPUT_TOPICS)
    window = scenario.get("window_s")
    settings = Settings(**service_security, kafka_bootstrap=kafka_clients.bootstrap_of(bootstrap),
                        database_url=database_url, group_id=group_id,
                        partitions=partitions, decision_window_s=window if window is not None else 172800,
                        ops_interval_s=10, timer_interval_s=0.25)
    service = Service(settings)
    task = asyncio.create_task(service.run())
    producer = kafka_clients.producer(bootstrap, enable_idempotence=True, max_request_size=2 * 1024 * 1024)
    admin = kafka_clients.admin(bootstrap)
    await producer.start()
    await admin.start()
    try:
        await asyncio.wait_for(service.ready.wait(), timeout_s)

        async def settle() -> None:
            targets = await end_offsets(bootstrap, (*INPUT_TOPICS,))
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if task.done():
                    task.result()
                if await group_caught_up(admin, group_id, targets) and await asyncio.to_thread(_outbox_drained, service):
                    return
                await asyncio.sleep(0.05)
            raise TimeoutError(f"service did not catch up within {timeout_s}s")

        for index, step in enumerate(scenario["steps"]):
            if "publish" in step:
                for entry in step["publish"]:
                    topic, key, value, headers = publisher.entry(entry)
                    await producer.send_and_wait(topic, value, key=key, headers=headers or None)
            elif "decide" in step:
                decide = step["decide"]
                outputs = await read_outputs(bootstrap, output_start)
                ids = [a["alert_id"] for a in outputs["kam.alerts"] if a["fingerprint"] == decide["fingerprint"]]
                alert_id = ids[-1] if ids else f"{scenario['name']}-unknown-alert-{index}"
                event = decision_event(scenario["name"], index, alert_id, decide)
                headers, value = publisher.event(event, json.dumps(event).encode())
                await producer.send_and_wait("kam.decisions", value, key=alert_id.encode(), headers=headers or None)
            elif step.get("advance"):
                await asyncio.sleep(settings.decision_window_s + 1.0)
            await settle()
        outputs = await read_outputs(bootstrap, output_start)
    finally:
        service.request_stop()
        await producer.stop()
        await admin.close()
        try:
            await asyncio.wait_for(task, 30)
        except Exception:
            if not task.done():
                task.cancel()
            raise
    alerts, instructions, dlq = outputs["kam.alerts"], outputs["kam.instructions"], outputs["kam.dlq"]
    notices = outputs["kam.notices"]
    return ScenarioRun(scenario["name"], summarise(alerts, instructions, dlq, notices), alerts, instructions, dlq,
                       time.monotonic() - started, notices, publisher.modes)


def _outbox_drained(service: Service) -> bool:
    from sqlalchemy import func, select

    with service.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(t.outbox).where(t.outbox.c.sent_at.is_(None))).scalar() == 0

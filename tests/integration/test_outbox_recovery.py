"""The relay takes over after a crash between publishing and marking without publishing anything twice."""

import asyncio
import uuid

import pytest
from aiokafka import TopicPartition
from sqlalchemy import func, insert, select, update

from services.config import Settings
from consumers.live_scenarios import run_scenario_live
from services.devkit.scenario_runner import end_offsets, read_outputs
from services.scenarios import bundled_scenarios
from services.store import tables as t
from services.store.db import make_engine
from consumers.service import Service
from services.outbox.relay import OutboxRelay

pytestmark = pytest.mark.kafka
OUTPUTS = ("kam.alerts", "kam.instructions", "kam.dlq")


async def test_rows_published_but_not_marked_are_not_published_again(kafka_bootstrap, sqlite_url, monkeypatch):
    scenario = next(s for s in bundled_scenarios() if s["name"] == "key-account-dunning")
    group = f"recovery-{uuid.uuid4().hex[:8]}"
    before = await end_offsets(kafka_bootstrap, OUTPUTS)
    marked: list[dict] = []  # the rows as they were before marking (which deletes them)
    mark_sent = OutboxRelay._mark_sent

    def remember_then_mark(relay, ids, positions):
        with relay.engine.connect() as conn:
            marked.extend(dict(r._mapping) for r in conn.execute(select(t.outbox).where(t.outbox.c.id.in_(ids))))
        mark_sent(relay, ids, positions)

    monkeypatch.setattr(OutboxRelay, "_mark_sent", remember_then_mark)
    first = await run_scenario_live(scenario, bootstrap=kafka_bootstrap, database_url=sqlite_url, group_id=group)
    monkeypatch.setattr(OutboxRelay, "_mark_sent", mark_sent)
    published = len(first.alerts) + len(first.instructions)
    assert published > 0 and len(marked) == published

    engine = make_engine(sqlite_url)
    with engine.begin() as conn:  # as if the relay died after Kafka acknowledged, before it marked the rows
        conn.execute(insert(t.outbox), marked)
        for row in conn.execute(select(t.relay_positions)).all():
            offset = before.get(TopicPartition(row.topic, row.partition), 0)
            conn.execute(update(t.relay_positions).where(t.relay_positions.c.topic == row.topic,
                                                         t.relay_positions.c.partition == row.partition)
                         .values(next_offset=offset))
    service = Service(Settings(kafka_bootstrap=kafka_bootstrap, database_url=sqlite_url, group_id=group))
    task = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.ready.wait(), 60)
        for _ in range(100):
            with engine.connect() as conn:
                unsent = conn.execute(select(func.count()).select_from(t.outbox)
                                      .where(t.outbox.c.sent_at.is_(None))).scalar()
            if unsent == 0:
                break
            await asyncio.sleep(0.1)
        assert unsent == 0
        assert service.relay.recovered == published
    finally:
        service.request_stop()
        await asyncio.wait_for(task, 30)
        engine.dispose()
    outputs = await read_outputs(kafka_bootstrap, before)
    assert len(outputs["kam.alerts"]) + len(outputs["kam.instructions"]) == published

"""A processor on a fresh store, and what it wrote to the outbox: for tests that drive the processor directly."""

from __future__ import annotations

import json

from sqlalchemy import Engine, select

from services.config import Settings
from services.inputs import InputRecord
from services.processor import Processor
from services.store import tables as t
from services.store.db import create_tables, make_engine


def processor_on(url: str) -> tuple[Engine, Processor]:
    engine = make_engine(url)
    create_tables(engine)
    return engine, Processor(engine, Settings(database_url=url))


def outbox_messages(engine: Engine, topic: str) -> list[dict]:
    """The messages for `topic` in the outbox, in the order they were written."""
    with engine.connect() as conn:
        return [json.loads(r.value) for r in conn.execute(select(t.outbox).where(t.outbox.c.topic == topic)
                                                          .order_by(t.outbox.c.id))]


def event_record(i: int, type_: str, data: dict, *, id_prefix: str = "c") -> InputRecord:
    """The `i`-th input record of a test: a structured CloudEvent from source `test`, one second apart."""
    return InputRecord("x", 0, i, None, json.dumps({
        "specversion": "1.0", "id": f"{id_prefix}{i}", "source": "test", "type": type_,
        "time": f"2027-01-01T00:00:{i:02d}Z", "data": data}).encode())

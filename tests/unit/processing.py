"""A processor on a fresh store, and what it wrote to the outbox: for tests that drive the processor directly."""

from __future__ import annotations

import json

from sqlalchemy import Engine, select

from services.config import Settings
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

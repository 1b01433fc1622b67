"""Helpers of the inbox tests: a store filled through the real processor, and a publisher that hands
decisions straight to that processor (the pipeline without Kafka), for the fast tests on SQLite."""

from __future__ import annotations

import json
import re
from pathlib import Path

from services.config import Settings
from services.inputs import InputRecord
from services.processor import Processor
from services.scenarios import load_scenario, message_bytes
from services.store.db import create_tables, make_engine

SCENARIOS = Path("/work/shared/scenarios")
if not SCENARIOS.exists():
    SCENARIOS = Path(__file__).resolve().parents[2] / "services" / "demo_scenarios"


def scenario(name: str) -> dict:
    return load_scenario(SCENARIOS / f"{name}.json")


class InProcessPipeline:
    """The real processor on a real store; `publish` is the inbox's publisher interface."""

    def __init__(self, database_url: str, **settings):
        self.settings = Settings(database_url=database_url, **settings)
        self.engine = make_engine(database_url)
        create_tables(self.engine)
        self.processor = Processor(self.engine, self.settings)
        self.offset = 0
        self.hold = False  # when set, decisions wait in `held` until `release_held()`
        self.held: list[dict] = []

    def feed(self, events: list[tuple[str, bytes | None, bytes]]) -> None:
        records = []
        for topic, key, value in events:
            self.offset += 1
            records.append(InputRecord(topic, 0, self.offset, key, value))
        self.processor.process(records)

    def replay(self, scenario_doc: dict) -> None:
        for step in scenario_doc["steps"]:
            if "publish" in step:
                self.feed([message_bytes(entry) for entry in step["publish"]])

    async def publish(self, event: dict) -> None:
        if self.hold:
            self.held.append(event)
            return
        self.apply_decisions([event])

    def apply_decisions(self, events: list[dict]) -> None:
        self.feed([("kam.decisions", e["data"]["alert_id"].encode(), json.dumps(e).encode()) for e in events])

    def release_held(self) -> None:
        events, self.held = self.held, []
        self.apply_decisions(events)

    async def reachable(self) -> bool:
        return True

    async def stop(self) -> None:
        pass


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def event(event_id: str, type_: str, data: dict, source: str = "test/web", time: str = "2027-01-02T00:00:00Z") -> dict:
    return {"specversion": "1.0", "id": event_id, "source": source, "type": type_, "time": time, "data": data}

"""`onevoice demo`: the bundled scenarios through a real broker and the real service, safely apart.

The demo uses a broker port (19092), a data directory (`.onevoice/demo/`) and stores (one
SQLite file per scenario under it) of its own, so a newcomer's first command cannot touch a
broker or database that holds real work. Told to use another port or directory, it still
refuses any broker or store that holds anything but demo data: a demo broker carries the topic
`onevoice.demo`, a demo store a `demo` row in `store_meta`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from services.observability.errors import SetupMistake

DEMO_PORT = 19092
DEMO_DIR = Path(".onevoice") / "demo"
MARKER_TOPIC = "onevoice.demo"
STORE_MARKER = "demo"


class ForeignData(SetupMistake):
    """The demo was pointed at a broker or store holding something other than demo data."""


@dataclass(frozen=True)
class DemoPlaces:
    bootstrap: str
    port: int
    data_dir: Path

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / f"kafka-{self.port}"

    @property
    def stores(self) -> Path:
        return self.data_dir / "stores"

    def store_url(self, scenario: str) -> str:
        return f"sqlite:///{(self.stores / f'{scenario}.db').resolve()}"


def broker_running(bootstrap: str) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=0.5):
            return True
    except OSError:
        return False


# -- refusing what is not ours ------------------------------------------------------------------

def check_stores(places: DemoPlaces, scenarios: list[str]) -> None:
    """Every store file the demo would write must be absent or a demo store of an earlier run."""
    from sqlalchemy import inspect, select

    from services.store import tables as t
    from services.store.db import make_engine

    for name in scenarios:
        path = places.stores / f"{name}.db"
        if not path.exists():
            continue
        engine = make_engine(places.store_url(name))
        try:
            with engine.connect() as conn:
                tables = set(inspect(conn).get_table_names())
                marked = "store_meta" in tables and conn.execute(
                    select(t.store_meta.c.value).where(t.store_meta.c.name == STORE_MARKER)).scalar() is not None
        finally:
            engine.dispose()
        if tables and not marked:
            raise ForeignData(f"{path} is not a demo store (it has no demo mark): the demo will not write into it.\n"
                              "Move it away, or give the demo another --data-dir.")


def mark_store(url: str) -> None:
    """Create the store's tables and mark it as demo data, so the next run may replace it."""
    from services.store import tables as t
    from services.store.db import create_tables, insert_stmt, make_engine

    engine = make_engine(url)
    try:
        create_tables(engine)
        with engine.begin() as conn:
            conn.execute(insert_stmt(conn, t.store_meta).values(name=STORE_MARKER, value="onevoice demo")
                         .on_conflict_do_nothing())
    finally:
        engine.dispose()


async def claim_broker(bootstrap: str) -> None:
    """Refuse a broker with topics other than the demo's; mark an empty one (or ours) as the demo's."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    from consumers.topics import ALL_TOPICS

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        topics = {name for name in await admin.list_topics() if not name.startswith("__")}
        if MARKER_TOPIC not in topics:
            if topics:
                shown = ", ".join(sorted(topics)[:5]) + (", …" if len(topics) > 5 else "")
                raise ForeignData(f"the broker at {bootstrap} holds topics that are not demo data ({shown}): "
                                  "the demo will not write into it.\nRun `onevoice demo` with a free --port "
                                  f"(default {DEMO_PORT}): it starts a broker of its own there.")
            try:
                await admin.create_topics([NewTopic(MARKER_TOPIC, num_partitions=1, replication_factor=1)])
            except TopicAlreadyExistsError:
                pass
        unexpected = topics - set(ALL_TOPICS) - {MARKER_TOPIC}
        if unexpected:
            raise ForeignData(f"the demo broker at {bootstrap} also holds other topics "
                              f"({', '.join(sorted(unexpected)[:5])}): someone else uses it; the demo will not "
                              "write into it.\nRun `onevoice demo` with another --port.")
    finally:
        await admin.close()


# -- what the KAMs and finance systems received ----------------------------------------------------

async def read_notices(bootstrap: str, since: dict) -> list[dict]:
    """kam.notices messages after `since` (partition -> offset), oldest first."""
    from aiokafka import AIOKafkaConsumer

    from services.devkit.scenario_runner import end_offsets

    ends = await end_offsets(bootstrap, ("kam.notices",))
    wanted = {tp: end for tp, end in ends.items() if end > since.get(tp, 0)}
    if not wanted:
        return []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    notices = []
    try:
        consumer.assign(list(wanted))
        for tp in wanted:
            consumer.seek(tp, since.get(tp, 0))
        remaining, deadline = dict(wanted), time.monotonic() + 15
        while remaining and time.monotonic() < deadline:
            for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                notices += [(m.timestamp, json.loads(m.value)) for m in messages if m.offset < wanted[tp]]
                if messages and messages[-1].offset + 1 >= wanted[tp]:
                    remaining.pop(tp, None)
    finally:
        await consumer.stop()
    return [n for _, n in sorted(notices, key=lambda item: item[0])]


async def run_one(scenario: dict, places: DemoPlaces):
    from consumers.live_scenarios import run_scenario_live
    from services.devkit.scenario_runner import end_offsets

    url = places.store_url(scenario["name"])
    path = places.stores / f"{scenario['name']}.db"
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)  # a demo store of an earlier run (check_stores made sure)
    await asyncio.to_thread(mark_store, url)
    notices_from = await end_offsets(places.bootstrap, ("kam.notices",))
    result = await run_scenario_live(scenario, bootstrap=places.bootstrap, database_url=url,
                                     group_id=f"onevoice-demo-{uuid.uuid4().hex[:8]}")
    notices = getattr(result, "notices", None)
    if notices is None:  # a runner that does not collect notices: read them, and judge the run with them
        from services.scenarios import summarise

        notices = await read_notices(places.bootstrap, notices_from)
        result.summary = summarise(result.alerts, result.instructions, result.dead_letters, notices)
    return result, notices


def show_run(console: Console, scenario: dict, run, ok: bool, notices: list[dict] = ()) -> None:
    mark = "[green]✓ as expected[/]" if ok else "[red]✗ differs from the scenario's expectation[/]"
    console.rule(f"[bold]{scenario['name']}[/] — {mark} ({run.seconds:.1f} s)")
    console.print(scenario.get("about", ""), style="dim")
    inbox = defaultdict(list)
    for alert in run.alerts:
        inbox[alert["assignee"]].append(alert)
    if inbox:
        table = Table(title="KAM inboxes (kam.alerts)", show_lines=True)
        for column in ("assignee", "status", "severity"):
            table.add_column(column, no_wrap=True)
        table.add_column("alert", ratio=1)
        for person in sorted(inbox):
            for alert in inbox[person]:
                table.add_row(person, alert["status"], alert["severity"],
                              f"{alert['title']}\n[dim]{alert['rule']} · recipients: {', '.join(alert['recipients'])}[/]")
        console.print(table)
    if notices:
        table = Table(title="Notices (kam.notices): who must know, no decision needed")
        for column in ("kind", "key account", "recipients", "notice"):
            table.add_column(column)
        for notice in notices:
            table.add_row(notice["kind"], notice["key_account_id"], ", ".join(notice["recipients"]), notice["title"])
        console.print(table)
    if run.instructions:
        table = Table(title="Finance / ERP instructions (kam.instructions)")
        for column in ("kind", "ref", "action", "account", "allocation", "reason"):
            table.add_column(column)
        for ins in run.instructions:
            allocation = ", ".join(f"{a['order_id']}={a['qty']}" for a in ins.get("allocation") or [])
            table.add_row(ins["kind"], ins["ref_id"], ins["action"], ins.get("account_id") or "", allocation,
                          ins["reason"])
        console.print(table)
    if run.dead_letters:
        table = Table(title="Dead letters (kam.dlq)")
        for column in ("code", "topic", "offset", "message"):
            table.add_column(column)
        for letter in run.dead_letters:
            table.add_row(letter["error"]["code"], letter["topic"], str(letter["offset"]), letter["error"]["message"])
        console.print(table)


def run_demo(console: Console, *, port: int = DEMO_PORT, data_dir: Path = DEMO_DIR, keep_broker: bool = False) -> int:
    """Run every bundled scenario and show the outputs; returns how many differed from their expectation."""
    import logging

    from services.devkit.broker import start_broker, stop_broker
    from services.scenarios import bundled_scenarios, normalised_expectation

    began = time.monotonic()
    scenarios = bundled_scenarios()
    places = DemoPlaces(f"127.0.0.1:{port}", port, data_dir.resolve())
    check_stores(places, [s["name"] for s in scenarios])  # before anything starts or is written
    started_here = False
    if not broker_running(places.bootstrap):
        console.print(f"[bold]Starting the demo's Apache Kafka on {places.bootstrap}[/] (data in {places.broker_dir}; "
                      "the first time fetches the jars with Maven)")
        start_broker(port, places.broker_dir, quiet=True)
        started_here = True
    try:
        asyncio.run(claim_broker(places.bootstrap))
        places.stores.mkdir(parents=True, exist_ok=True)
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        failures = 0
        for scenario in scenarios:
            with console.status(f"scenario [bold]{scenario['name']}[/]…"):
                result, notices = asyncio.run(run_one(scenario, places))
            ok = result.summary == normalised_expectation(scenario)
            failures += not ok
            show_run(console, scenario, result, ok, notices)
        console.print(f"\n[bold]{len(scenarios) - failures} of {len(scenarios)} scenarios behaved as expected[/] "
                      f"in {time.monotonic() - began:.0f} s. Stores: {places.stores}")
    finally:
        if started_here and not keep_broker:
            stop_broker(places.broker_dir, port)
    return failures

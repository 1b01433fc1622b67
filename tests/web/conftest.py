"""The live stack of the inbox's end-to-end and browser tests: real Kafka, PostgreSQL, `onevoice run` and
`onevoice web` as subprocesses, tokens made with `onevoice token create`, and the dunning scenario
(plus a price conflict, a service conflict and a shortage for ACME) replayed through the broker."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from consumers.topics import ensure_topics
from schemas.registry import INPUT_TOPICS
from services.devkit.scenario_runner import OUTPUT_TOPICS, end_offsets, read_outputs, start_group_at, wait_until_caught_up
from services.scenarios import message_bytes
from tests.support.databases import fresh_postgres_database
from tests.support.kafka import send_messages
from tests.support.service_process import REPO_ROOT, ServiceProcess
from tests.web.support import scenario

# Display names the CRM sends later (newer team events): the pages must show these, not the ids.
NAMES = {"p-anna": ("global_kam", "DE", "Anna Schmidt"), "p-bob": ("local_kam", "US", "Bob Miller"),
         "p-carla": ("local_kam", "IT", "Carla Rossi"), "p-dora": ("senior_kam", "DE", "Dora Wagner"),
         "p-finn": ("finance", "DE", "Finn Becker"), "p-ivo": ("country_manager", "IT", "Ivo Bianchi"),
         "p-tom": ("technical", "DE", "Tom Krüger"), "p-eve": ("executive_sponsor", "DE", "Eve Fischer")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveStack:
    base_url: str
    bootstrap: str
    database_url: str
    group_id: str
    env: dict
    suffix: str
    output_start: dict
    logs: Path | None = None
    tokens: dict[str, str] = field(default_factory=dict)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the `onevoice run` and `onevoice web` logs, for a failing test's message."""
        return "\n".join(f"--- {name}\n" + "\n".join((self.logs / name).read_text(errors="replace").splitlines()[-lines:])
                         for name in ("run.log", "web.log") if self.logs and (self.logs / name).exists())

    def token(self, person_id: str, *extra: str) -> str:
        """A token from `onevoice token create` (its last line of stdout), one per person and options."""
        key = " ".join((person_id, *extra))
        if key not in self.tokens:
            out = subprocess.run([sys.executable, "-m", "consumers.cli", "token", "create", person_id, *extra],
                                 cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
            self.tokens[key] = out.stdout.strip().splitlines()[-1]
        return self.tokens[key]

    def headers(self, person_id: str, *extra: str) -> dict:
        return {"Authorization": f"Bearer {self.token(person_id, *extra)}"}

    def publish(self, events: list[tuple[str, bytes | None, bytes]], timeout_s: float = 90) -> None:
        """Publish, then wait until `onevoice run` has committed past them."""
        in_thread(send_messages(self.bootstrap, events))
        in_thread(wait_until_caught_up(self.bootstrap, self.group_id, timeout_s))

    def outputs(self) -> dict[str, list[dict]]:
        return in_thread(read_outputs(self.bootstrap, self.output_start))

    def dunning(self, dunning_id: str, account_id: str = "ACME-IT", action: str = "collection") -> None:
        data = {"dunning_id": dunning_id, "account_id": account_id, "invoice_id": f"INV-{dunning_id}", "level": 3,
                "amount": "9150.00", "currency": "EUR", "due_date": "2027-02-01", "proposed_action": action}
        self.publish([("finance.dunning", account_id.encode(), json.dumps(
            {"specversion": "1.0", "id": f"{dunning_id}-{self.suffix}", "source": "finance/sap", "type": "dunning.triggered",
             "time": "2027-01-03T00:00:00Z", "data": data}).encode())])


def in_thread(coroutine):
    """Run a coroutine to its end on a thread of its own (Playwright's sync API keeps a loop running here)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _unique(entry: dict, suffix: str) -> tuple[str, bytes | None, bytes]:
    """A scenario message with its event id made unique to this run (so are the alert ids derived from it)."""
    entry = json.loads(json.dumps(entry))
    entry["value"]["id"] = f"{entry['value']['id']}-{suffix}"
    return message_bytes(entry)


def _steps(name: str, first: int = 0, last: int | None = None) -> list[list[dict]]:
    return [step["publish"] for step in scenario(name)["steps"][first:last] if "publish" in step]


def _names_events(suffix: str) -> list[tuple[str, bytes, bytes]]:
    return [("crm.accounts", b"ACME", json.dumps(
        {"specversion": "1.0", "id": f"names-{person}-{suffix}", "source": "crm/main", "type": "team.member_assigned",
         "time": "2027-01-01T01:00:00Z", "data": {"account_id": "ACME", "person_id": person, "role": role,
                                                  "country": country, "name": name,
                                                  "email": f"{person[2:]}@example.com"}}).encode())
            for person, (role, country, name) in NAMES.items()]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"onevoice web exited: {log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"onevoice web did not answer {url}: {log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="session")
def live_stack(kafka_bootstrap, postgres_url, tmp_path_factory):
    suffix = uuid.uuid4().hex[:8]
    logs = tmp_path_factory.mktemp("web-stack")
    with fresh_postgres_database(postgres_url, prefix="web") as database_url:
        asyncio.run(ensure_topics(kafka_bootstrap, 3))
        group_id = f"web-e2e-{suffix}"
        asyncio.run(start_group_at(kafka_bootstrap, group_id, asyncio.run(end_offsets(kafka_bootstrap, INPUT_TOPICS))))
        output_start = asyncio.run(end_offsets(kafka_bootstrap, OUTPUT_TOPICS))
        env = {**os.environ, "ONEVOICE_KAFKA_BOOTSTRAP": kafka_bootstrap, "ONEVOICE_DATABASE_URL": database_url,
               "ONEVOICE_GROUP_ID": group_id, "ONEVOICE_PARTITIONS": "3", "ONEVOICE_TIMER_INTERVAL_S": "0.5",
               "ONEVOICE_METRICS_PORT": "0", "PYTHONUNBUFFERED": "1"}
        service = ServiceProcess(env, logs / "run.log")
        service.start()
        port = _free_port()
        web_log = logs / "web.log"
        with open(web_log, "wb") as out:
            web = subprocess.Popen([sys.executable, "-m", "consumers.cli", "web", "--port", str(port)], cwd=REPO_ROOT,
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
        stack = LiveStack(f"http://127.0.0.1:{port}", kafka_bootstrap, database_url, group_id, env, suffix, output_start,
                          logs)
        try:
            _wait_http(f"{stack.base_url}/healthz", web, web_log)
            for step in _steps("key-account-dunning"):
                stack.publish([_unique(e, suffix) for e in step])
            stack.publish(_names_events(suffix))
            for name, first in (("italian-bargain", 1), ("service-given-away", 1), ("scarce-stock", 1)):
                for step in _steps(name, first):
                    stack.publish([_unique(e, suffix) for e in step])
            yield stack
        finally:
            web.terminate()
            try:
                web.wait(30)
            except subprocess.TimeoutExpired:
                web.kill()
            if service.alive():
                service.terminate()

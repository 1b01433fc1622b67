"""SIGKILL `onevoice notify` (a subprocess) while it works: every notification arrives, none twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from tests.notify.harness import BASE_URL, SENDER, create_topics, delivery_states, publish, quiet_digest_hour
from tests.notify.servers import SmtpServer, wait_for
from tests.notify.test_outages import team_and_alerts

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


class NotifyProcess:
    def __init__(self, env: dict[str, str], log_path: Path):
        self.env, self.log_path, self.proc = env, log_path, None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "consumers.cli", "notify"], cwd=REPO, env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


async def test_sigkill_while_sending_and_consuming_loses_and_doubles_nothing(postgres_database, kafka_bootstrap,
                                                                             topic_prefix, tmp_path):
    alerts = team_and_alerts(postgres_database, 300)
    await create_topics(kafka_bootstrap, f"{topic_prefix}.alerts", f"{topic_prefix}.notices")
    await publish(kafka_bootstrap, f"{topic_prefix}.alerts", alerts[:150], "assignee")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONEVOICE_")}
    with SmtpServer() as smtp:
        env.update(ONEVOICE_DATABASE_URL=postgres_database, ONEVOICE_KAFKA_BOOTSTRAP=kafka_bootstrap,
                   ONEVOICE_NOTIFY_GROUP_ID=f"{topic_prefix}-notify", ONEVOICE_NOTIFY_ALERTS_TOPIC=f"{topic_prefix}.alerts",
                   ONEVOICE_NOTIFY_NOTICES_TOPIC=f"{topic_prefix}.notices", ONEVOICE_SMTP_URL=smtp.url,
                   ONEVOICE_SMTP_FROM=SENDER, ONEVOICE_WEB_BASE_URL=BASE_URL, ONEVOICE_NOTIFY_LEASE_S="4",
                   ONEVOICE_SESSION_TIMEOUT_MS="6000", ONEVOICE_NOTIFY_WORKERS="1", ONEVOICE_NOTIFY_RETRY_BASE_S="0.2",
                   ONEVOICE_NOTIFY_DIGEST_HOUR=str(quiet_digest_hour()))
        notify = NotifyProcess(env, tmp_path / "notify.log")
        box = smtp.mailbox
        box.delay_s = 0.01
        kills = {40: threading.Event(), 140: threading.Event()}

        def kill_mid_transaction(rcpt_count: int) -> None:
            # SIGKILL after the server saw the recipient, before the message data: the process dies mid-send
            if rcpt_count in kills and not kills[rcpt_count].is_set():
                notify.kill()
                kills[rcpt_count].set()

        box.on_rcpt = kill_mid_transaction
        notify.start()
        await asyncio.to_thread(wait_for, kills[40].is_set, 120, "the first kill")
        notify.proc.wait(30)
        notify.start()
        await publish(kafka_bootstrap, f"{topic_prefix}.alerts", alerts[150:], "assignee")  # consumed while sending
        await asyncio.to_thread(wait_for, kills[140].is_set, 120, "the second kill")
        notify.proc.wait(30)
        notify.start()
        await asyncio.to_thread(wait_for, lambda: len(box.messages) >= len(alerts), 180, "every mail")
        await asyncio.sleep(2)
        assert notify.stop() == 0
        received = Counter(m["X-Onevoice-Alert-Id"] for m in box.messages)
        assert set(received) == {a["alert_id"] for a in alerts}  # none lost
        assert max(received.values()) == 1, [k for k, n in received.items() if n > 1]  # none doubled
        assert len({m["Message-ID"] for m in box.messages}) == len(alerts)
    states = Counter(r.state for r in delivery_states(postgres_database))
    assert states == Counter({"sent": len(alerts)})
    log = (tmp_path / "notify.log").read_text()
    assert "took over" in log  # the killed processes' claims were finished by their successors
    assert "Traceback" not in log.split("took over")[-1]

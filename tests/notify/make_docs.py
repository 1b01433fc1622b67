"""Refresh the notification samples in docs/: `uv run --frozen python -m tests.notify.make_docs`.

Everything is made the way production makes it: the italian-bargain scenario runs through the real
processor, its alert is recorded and sent by the notifier to a real SMTP server (aiosmtpd), and the
received mails are saved and rendered in headless Chromium. The digest is the 200-alert one of the tests.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from datetime import datetime, timedelta
from email import policy as email_policy
from pathlib import Path

from services.notify.deliveries import DeliveryLog
from tests.notify.digest_fixture import BERLIN, DAY, build_digest_store
from tests.notify.screenshots import screenshot_html
from tests.notify.scenario_alerts import public_scenarios, scenario_outputs, with_addresses
from tests.notify.servers import SmtpServer
from tests.notify.test_digest import notifier, send_all

DOCS = Path(__file__).resolve().parents[2] / "docs"


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/docs.db"
        scenario = next(s for s in public_scenarios() if s["name"] == "italian-bargain")
        alerts, _ = scenario_outputs(with_addresses(scenario), url, prefix="")
        alert = next(a for a in alerts if a["severity"] == "high")
        with SmtpServer() as smtp:
            now = [datetime.fromisoformat(alert["created_at"].replace("Z", "+00:00")) + timedelta(minutes=1)]
            n = notifier(url, smtp.url, now)
            DeliveryLog(n.engine, webhooks=[]).record([alert], [], now[0])
            await send_all(n)
            n.engine.dispose()
            mail = next(m for m in smtp.mailbox.messages if m["X-Onevoice-Alert-Id"] == alert["alert_id"]
                        and m["To"].addresses[0].addr_spec.startswith(alert["assignee"]))
        (DOCS / "sample-alert-email.eml").write_bytes(mail.as_bytes(policy=email_policy.SMTP.clone(max_line_length=998,
                                                                                                   linesep="\n")))
        (DOCS / "sample-alert-email.txt").write_text(
            "".join(f"{k}: {v}\n" for k, v in mail.items() if not k.lower().startswith(("content", "mime")))
            + "\n" + mail.get_body(("plain",)).get_content())
        await asyncio.to_thread(screenshot_html, mail.get_body(("html",)).get_content(),
                                DOCS / "screenshots" / "alert-email.png", width=760, height=820)

        url = f"sqlite:///{tmp}/digest.db"
        build_digest_store(url)
        with SmtpServer() as smtp:
            now = [datetime(DAY.year, DAY.month, DAY.day, 7, 0, 30, tzinfo=BERLIN)]
            n = notifier(url, smtp.url, now)
            await n.schedule_once()
            await send_all(n)
            n.engine.dispose()
            digest = next(m for m in smtp.mailbox.messages if m["X-Onevoice-Digest"] == DAY.isoformat())
        await asyncio.to_thread(screenshot_html, digest.get_body(("html",)).get_content(),
                                DOCS / "screenshots" / "digest.png", width=860, height=1400)
    print(json.dumps({"alert": alert["alert_id"], "subject": mail["Subject"], "digest": digest["Subject"]}, ensure_ascii=False))


if __name__ == "__main__":
    asyncio.run(main())

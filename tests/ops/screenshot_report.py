"""Write docs/screenshots/report.png: the KPI report of a generated 100,000-alert workload in headless Chromium.

    uv run --frozen python -m tests.ops.screenshot_report
"""

from __future__ import annotations

import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path

from playwright.sync_api import sync_playwright

from services.report import build_report
from services.store.db import create_tables, make_engine
from tests.ops.report_data import workload, write

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def main() -> None:
    end = datetime(2027, 6, 7, tzinfo=timezone.utc)
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/store.db")
        create_tables(engine)
        write(engine, *workload(100_000, end=end))
        began = time.perf_counter()
        written = build_report(engine, start=None, end=date(2027, 6, 6), out=Path(tmp) / "report.html", now=end)
        print(f"report of {written.alerts} alerts in {time.perf_counter() - began:.2f} s")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(written.html.as_uri())
            page.screenshot(path=str(OUT / "report.png"))
            page.screenshot(path=str(OUT / "report-full.png"), full_page=True)
            browser.close()
    print(f"wrote {OUT / 'report.png'} and {OUT / 'report-full.png'}")


if __name__ == "__main__":
    main()

"""`onevoice report`: read the store, compute the KPIs, draw the trends, write one HTML file and its PNGs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import Engine

from services.report.load import Period, load_alert_facts

DEFAULT_WEEKS = 12


@dataclass(frozen=True)
class WrittenReport:
    html: Path
    pngs: list[Path]
    alerts: int  # opened in the period


def build_report(engine: Engine, *, start: date | None, end: date, out: Path,
                 now: datetime | None = None) -> WrittenReport:
    """Write the report for the UTC days `start`..`end` to `out` (self-contained) and `<out stem>-<plot>.png`."""
    from services.report import plots
    from services.report.html import render_html
    from services.report.kpis import compute_kpis, weekly_backlog

    now = now or datetime.now(timezone.utc)
    period = Period(start or end - timedelta(weeks=DEFAULT_WEEKS) + timedelta(days=1), end)
    if period.start > period.end:
        raise ValueError(f"--from {period.start} is after --to {period.end}")
    facts = load_alert_facts(engine, period)
    kpis = compute_kpis(facts, period, as_of=now)
    figures = {
        "opened-by-rule": plots.opened_by_rule(kpis),
        "response-times": plots.response_times(kpis),
        "escalations-backlog": plots.escalations_and_backlog(
            kpis, weekly_backlog(facts, list(kpis.weeks), timezone.utc)),
        "backlog-by-age": plots.backlog_by_age(kpis),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(kpis, figures, now), encoding="utf-8")
    pngs = []
    for name, png in figures.items():
        path = out.with_name(f"{out.stem}-{name}.png")
        path.write_bytes(png)
        pngs.append(path)
    return WrittenReport(out, pngs, kpis.total.opened)

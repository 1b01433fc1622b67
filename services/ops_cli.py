"""`onevoice alerts`, `onevoice status`, `onevoice report`: what operations and managers ask of a running onevoice.

All three read the store (and, for `status`, the broker's view of the consumer group); none of
them writes anything or joins the group. Mounted by consumers/cli.py through `register_ops_commands`.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from services.observability.cli_errors import friendly_errors

console = Console()


def _store(settings):
    """An engine on the configured store, refusing a store whose schema is not this onevoice's."""
    from services.observability.store_probe import require_current_schema
    from services.store.db import make_engine

    engine = make_engine(settings.database_url)
    require_current_schema(engine, settings.database_url)
    return engine


@friendly_errors
def alerts(
    open_only: Annotated[bool, typer.Option("--open", help="Only alerts not resolved or waived.")] = False,
    assignee: Annotated[str | None, typer.Option("--assignee", metavar="ID", help="Only this assignee's.")] = None,
    key_account: Annotated[str | None, typer.Option("--key-account", metavar="ID",
                                                    help="Only this key account's.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1)] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line, as on kam.alerts.")] = False,
) -> None:
    """List alerts from the store, newest first (as their last status change left them)."""
    from services.config import Settings
    from services.observability.queries import list_alerts

    rows = list_alerts(_store(Settings()), open_only=open_only, assignee=assignee, key_account=key_account,
                       limit=limit)
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    table = Table(title=f"{len(rows)} alert{'s' if len(rows) != 1 else ''}", show_lines=False)
    for column in ("updated", "status", "severity", "rule", "key account", "assignee", "due", "title"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["updated_at"][:16], row["status"], row["severity"], row["rule"], row["key_account_id"],
                      row["assignee"], (row["due_at"] or "")[:16], row["title"])
    console.print(table)


@friendly_errors
def status(as_json: Annotated[bool, typer.Option("--json", help="As one JSON object.")] = False) -> None:
    """Is the stream healthy? Consumer lag, outbox backlog, open and escalated alerts, each process's last batch."""
    from services.config import Settings
    from services.observability.status import gather_status

    settings = Settings()
    report = asyncio.run(gather_status(settings, _store(settings)))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    lag = report["consumer_lag"]
    console.print(f"[bold]consumer group[/] {settings.group_id}: lag {lag['total']} messages"
                  + (f" (most on {lag['worst_partition']}: {lag['worst']})" if lag["total"] else ""))
    outbox = report["outbox"]
    console.print(f"[bold]outbox[/] {outbox['pending']} outputs waiting"
                  + (f", oldest {outbox['oldest_age_s']:.0f} s" if outbox["pending"] else ""))
    alerts_ = report["alerts"]
    console.print(f"[bold]alerts[/] {alerts_['open']} open, {alerts_['escalated']} escalated, "
                  f"{alerts_['escalations_due']} due for escalation")
    if not report["instances"]:
        console.print("[bold]processes[/] none has reported in the last day")
    for inst in report["instances"]:
        batch = inst.get("last_batch") or {}
        last = (f"last batch {batch['at']}: {batch['events']} events in {batch['duration_ms']} ms" if batch
                else "no batch yet")
        console.print(f"[bold]process[/] {inst['instance']} seen {inst['seen_at']}, "
                      f"{inst.get('assigned_partitions', 0)} partitions, {last}")


@friendly_errors
def report(
    start: Annotated[datetime | None, typer.Option("--from", help="First day (UTC), default 12 weeks before --to.",
                                                   formats=["%Y-%m-%d"])] = None,
    end: Annotated[datetime | None, typer.Option("--to", help="Last day (UTC), default today.",
                                                 formats=["%Y-%m-%d"])] = None,
    out: Annotated[Path, typer.Option(help="The HTML file; PNG plots are written beside it.")] = Path("report.html"),
) -> None:
    """The KPI report: per KAM and key account, alerts by rule, time to acknowledge and decide, escalations,
    dunning and stock exceptions, open backlog by age, weekly trends (one self-contained HTML file)."""
    import time

    from services.config import Settings
    from services.report import build_report

    began = time.perf_counter()
    to = (end or datetime.now(timezone.utc)).replace(tzinfo=timezone.utc).date()
    if start is not None and start.date() > to:
        raise typer.BadParameter(f"{start.date()} is after --to {to}", param_hint="--from")
    written = build_report(_store(Settings()), start=start.date() if start else None, end=to, out=out)
    console.print(f"wrote {written.html} ({written.alerts} alerts, {len(written.pngs)} plots) "
                  f"in {time.perf_counter() - began:.1f} s")


def register_ops_commands(app: typer.Typer) -> None:
    app.command("alerts")(alerts)
    app.command("status")(status)
    app.command("report")(report)

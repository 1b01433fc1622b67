"""What `onevoice demo` shows: per scenario, each KAM's inbox and each finance/ERP system's instructions."""

from __future__ import annotations

import socket
from collections import defaultdict

from rich.console import Console
from rich.table import Table


def broker_running(bootstrap: str) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def show_run(console: Console, scenario: dict, run, ok: bool) -> None:
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

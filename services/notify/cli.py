"""`onevoice notify` (run the notifier) and `onevoice notify prefs …` (how each person wants to be told)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

notify_app = typer.Typer(help="Notifications: tell the people an alert or notice concerns (e-mail, Teams/Slack "
                              "webhooks, reminders, daily digest). Without a command: run the notifier until "
                              "SIGTERM/SIGINT (several processes share the work).", invoke_without_command=True)
prefs_app = typer.Typer(help="How each person wants to be told: channels, severities mailed at once, language.",
                        no_args_is_help=True)
notify_app.add_typer(prefs_app, name="prefs")
console = Console()
SEVERITIES = ("low", "medium", "high", "critical")


def _engine():
    from services.config import Settings
    from services.store.db import create_tables, make_engine

    engine = make_engine(Settings().database_url)
    create_tables(engine)
    return engine


@notify_app.callback()
def notify(ctx: typer.Context,
           verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    """Run the notifier until SIGTERM/SIGINT: consumes kam.alerts and kam.notices in its own consumer group
    (ONEVOICE_NOTIFY_GROUP_ID) and delivers each notification once. Start several to share the work."""
    if ctx.invoked_subcommand is not None:
        return
    import asyncio
    import logging

    from services.config import Settings
    from services.notify.service import run_notifier

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    asyncio.run(run_notifier(Settings()))


@notify_app.command("retry-failed")
def retry_failed() -> None:
    """Send again every notification recorded failed (after fixing the SMTP server or webhook)."""
    from services.notify.deliveries import DeliveryLog

    count = DeliveryLog(_engine(), webhooks=[]).retry_failed(datetime.now(timezone.utc))
    console.print(f"{count} failed notifications queued again")


@notify_app.command("status")
def status() -> None:
    """Rows of the delivery log by state (pending, sent, failed, held for the digest, no_address)."""
    from services.notify.deliveries import DeliveryLog

    counts = DeliveryLog(_engine(), webhooks=[]).counts()
    for state in ("pending", "sent", "failed", "held", "no_address"):
        console.print(f"{state:>10}  {counts.get(state, 0)}")


@prefs_app.command("show")
def prefs_show(person: Annotated[list[str] | None, typer.Argument(help="Person ids; none: everyone with preferences.")] = None) -> None:
    """Show preferences (people without any get the defaults: e-mail for medium and above, notices in the digest)."""
    from sqlalchemy import select

    from services.notify.deliveries import preference_of
    from services.notify.policy import DEFAULT_PREFERENCE
    from services.notify.tables import notify_preferences

    with _engine().connect() as conn:
        query = select(notify_preferences).order_by(notify_preferences.c.person_id)
        if person:
            query = query.where(notify_preferences.c.person_id.in_(person))
        rows = {r.person_id: preference_of(r) for r in conn.execute(query)}
    table = Table("person", "channels", "mailed at once", "notices at once", "digest", "language", "e-mail")
    for pid in (person or sorted(rows)):
        p = rows.get(pid, DEFAULT_PREFERENCE)
        table.add_row(pid + ("" if pid in rows else " (defaults)"), ",".join(p.channels) or "digest only",
                      ",".join(p.severities), "yes" if p.notices else "no", "yes" if p.digest else "no",
                      p.language or "(default)", p.email or "(team)")
    console.print(table)


@prefs_app.command("set")
def prefs_set(
    person: Annotated[str, typer.Argument(help="Person id, as in the key-account teams.")],
    channels: Annotated[str | None, typer.Option(help="'email' (mail at once) or 'none' (digest only).")] = None,
    severities: Annotated[str | None, typer.Option(help="Severities mailed at once, e.g. high,critical.")] = None,
    notices: Annotated[bool | None, typer.Option("--notices/--no-notices", help="Mail notices at once.")] = None,
    digest: Annotated[bool | None, typer.Option("--digest/--no-digest", help="Receive the daily digest.")] = None,
    language: Annotated[str | None, typer.Option(help="en or de.")] = None,
    email: Annotated[str | None, typer.Option(help="Address to use instead of the team's (e.g. for a desk).")] = None,
) -> None:
    """Change one person's preferences; options not given keep their value."""
    from services.notify.prefs import set_preference

    try:
        pref = set_preference(_engine(), person, channels=channels, severities=severities, notices=notices,
                              digest=digest, language=language, email=email)
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2)
    console.print(f"{person}: channels={','.join(pref.channels) or 'digest only'} "
                  f"severities={','.join(pref.severities)} notices={'mail' if pref.notices else 'digest'} "
                  f"digest={'yes' if pref.digest else 'no'} language={pref.language or 'default'}"
                  + (f" email={pref.email}" if pref.email else ""))


@prefs_app.command("reset")
def prefs_reset(person: Annotated[str, typer.Argument(help="Person id.")]) -> None:
    """Back to the defaults."""
    from sqlalchemy import delete

    from services.notify.tables import notify_preferences

    with _engine().begin() as conn:
        conn.execute(delete(notify_preferences).where(notify_preferences.c.person_id == person))
    console.print(f"{person}: defaults")


__all__ = ["notify_app"]

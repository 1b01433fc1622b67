"""The `onevoice` command line (CONTRACT §1): broker, run, replay, demo, schemas, and the commands of services/.

At the edge, beside the service loop it runs: `onevoice` (pyproject's `[project.scripts]`) and
`python -m consumers.cli` start it here.
"""

from __future__ import annotations

import signal
import sys
import threading

# `onevoice run` must treat a SIGTERM as a clean stop from its first instant, even while the
# heavier imports below are still loading; other commands keep the default behaviour.
STOP_EARLY = threading.Event()
if sys.argv[1:2] == ["run"]:
    for _sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(_sig, lambda *_: STOP_EARLY.set())

import asyncio  # noqa: E402
import logging  # noqa: E402
from enum import Enum  # noqa: E402
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from services.devkit.cli_broker import broker_app
from services.config import Settings
from services.observability.cli_errors import friendly_errors, set_debug
from services.ops_cli import register_ops_commands

app = typer.Typer(
    name="onevoice",
    help="onevoice keeps a key-account team speaking with one consistent message to the customer: it consumes "
         "ERP/CRM/finance events from Kafka, flags contradicting agreements and routes key-account exceptions "
         "to the responsible KAM. Configuration comes from ONEVOICE_* environment variables (or .env).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(broker_app, name="broker")
from services.notify.cli import notify_app  # noqa: E402  (notifications: `onevoice notify`, `notify prefs`)

app.add_typer(notify_app, name="notify")
from services.web.cli import token_app, web as web_command  # noqa: E402  (the inbox: `onevoice web`, `token`)

app.add_typer(token_app, name="token")
app.command("web")(web_command)
console = Console()


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", envvar="ONEVOICE_DEBUG",
                                             help="Show the full traceback when a command fails.")] = False) -> None:
    """onevoice: one consistent message to the key account."""
    set_debug(debug)


def _logging(verbose: bool, settings: Settings | None = None) -> None:
    """ONEVOICE_LOG_LEVEL and ONEVOICE_LOG_FORMAT (text|json); --verbose: DEBUG, library start-up lines too."""
    from services.observability.logs import setup_logging

    settings = settings or Settings()
    setup_logging(settings.log_level, settings.log_format, verbose=verbose)
    try:
        from services.redact import install_secrets_filter
    except ImportError:
        return
    secrets = getattr(settings, "secret_values", lambda: [])()
    install_secrets_filter(secrets)


@app.command()
@friendly_errors
def run(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    """Run the whole service (consumers, outbox relay, escalation timers, ops stream) until SIGTERM/SIGINT.

    Creates missing topics and tables at start. Start several with the same ONEVOICE_GROUP_ID and
    ONEVOICE_DATABASE_URL to share the work.
    """
    for sig in (signal.SIGTERM, signal.SIGINT):  # also when run() is called without the early hook above
        signal.signal(sig, lambda *_: STOP_EARLY.set())
    from consumers.service import run_service

    from services.outages import StartupFailed

    settings = Settings()
    _logging(verbose, settings)
    try:
        asyncio.run(run_service(settings, stop_early=STOP_EARLY))
    except StartupFailed as exc:  # the database or the broker never answered: one line, no traceback
        sys.stderr.write(f"error: {exc}\n")
        raise typer.Exit(2) from None


class ContentMode(str, Enum):
    """`onevoice replay --mode`: how each event is put into a Kafka message (CONTRACT §2)."""

    structured = "structured"
    binary = "binary"
    mixed = "mixed"


@app.command()
@friendly_errors
def replay(
    file: Annotated[Path, typer.Argument(help="JSON-lines file, one CloudEvent per line.", exists=True, dir_okay=False,
                                         metavar="FILE")],
    mode: Annotated[ContentMode, typer.Option(
        help="Content mode (CONTRACT §2): structured (the line as the value), binary (attributes as ce_* headers, "
             "data as the value) or mixed (each event in one of the two at random, see --seed).")
    ] = ContentMode.structured,
    seed: Annotated[int, typer.Option(help="Seed of the --mode mixed draws (same file and seed, same choices).")] = 0,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers (default: ONEVOICE_KAFKA_BOOTSTRAP; "
                                                       "the ONEVOICE_KAFKA_* security settings apply).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check every line as the service would; publish "
                                                            "nothing.")] = False,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Exit 0 even when lines were skipped "
                                                                      "(they are still listed).")] = False,
    topic: Annotated[str | None, typer.Option(help="Publish every line to this topic instead of the one of its type.")] = None,
) -> None:
    """Publish a JSON-lines file of events to their topics (chosen by `type`, keyed as CONTRACT §3 says).

    Every line is checked as the service will check it.
    A line it would dead-letter is skipped and listed with its reason (the first ten); exit code 1 unless --skip-invalid.
    Re-running a corrected file is safe: events already applied are duplicates and change nothing.
    """
    from services.devkit.replay import replay_file

    settings = Settings()
    if bootstrap:
        settings = settings.model_copy(update={"kafka_bootstrap": bootstrap})
    lines = file.read_bytes().splitlines()
    with Progress(TextColumn("[bold]replay[/]" if not dry_run else "[bold]check[/]"), BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task("replay", total=len(lines))
        report = asyncio.run(replay_file(settings, lines, topic=topic, mode=mode.value, seed=seed, dry_run=dry_run,
                                         on_progress=lambda n: progress.update(task, advance=n)))
    modes = ", ".join(f"{n} {m}" for m, n in sorted(report.modes.items()))
    if dry_run:
        console.print(f"dry run: {report.valid} valid events ({modes or 'none'}); nothing published", markup=False)
    else:
        console.print(f"published {report.published} events to {settings.kafka_bootstrap} ({modes or 'none'})",
                      markup=False)
    if report.skipped:
        console.print(f"skipped {report.skipped} lines:", markup=False)
        for problem in report.problems:
            console.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
        if report.unlisted:
            console.print(f"  … and {report.unlisted} more", markup=False)
        if not skip_invalid:
            raise typer.Exit(1)


@app.command()
def schemas(out: Annotated[Path, typer.Option(help="Directory for the JSON Schemas and asyncapi.json.")] = Path("schema-docs")) -> None:
    """Write a JSON Schema for every event and output message, and the AsyncAPI document of all topics."""
    from schemas.export import write_asyncapi, write_json_schemas

    written = write_json_schemas(out)
    written.append(write_asyncapi(out / "asyncapi.json"))
    console.print(f"wrote {len(written)} files to {out}/")


@app.command()
@friendly_errors
def demo(
    port: Annotated[int, typer.Option(help="Broker port of the demo: its own broker is started there unless a demo "
                                           "broker runs.")] = 19092,
    data_dir: Annotated[Path, typer.Option(help="Where the demo keeps its broker data and its stores.",
                                           file_okay=False)] = Path(".onevoice/demo"),
    keep_broker: Annotated[bool, typer.Option(help="Leave a broker the demo started running.")] = False,
) -> None:
    """The newcomer's first command: start a broker if none runs, run the service, replay the bundled
    example scenarios, and show what each KAM and each finance/ERP system received.

    Uses a broker, data directory and stores of its own, and refuses any that hold other than demo data."""
    from consumers.demo import run_demo

    logging.basicConfig(level=logging.WARNING)
    if run_demo(console, port=port, data_dir=data_dir, keep_broker=keep_broker):
        raise typer.Exit(1)


register_ops_commands(app)

if __name__ == "__main__":
    app()

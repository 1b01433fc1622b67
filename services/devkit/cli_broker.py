"""`onevoice broker …`: start and stop the local single-node Apache Kafka (KRaft).

Mounted by consumers/cli.py as ``app.add_typer(broker_app, name="broker")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from services.devkit.broker import BrokerError, broker_status, default_data_dir, start_broker, stop_broker

broker_app = typer.Typer(
    name="broker",
    help=(
        "Run a local single-node Apache Kafka (KRaft) on 127.0.0.1 for development and tests. "
        "The broker jars are fetched once from Maven Central with `mvn` (needs Java 17+ and Maven) "
        "into ./.onevoice/cache (override with ONEVOICE_CACHE_DIR)."
    ),
    no_args_is_help=True,
)

_err = Console(stderr=True)

PortOpt = Annotated[int, typer.Option("--port", "-p", help="Client (PLAINTEXT) port on 127.0.0.1.", min=1, max=65535)]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        "-d",
        help="Broker data directory (logs, metadata, broker.log, pid file). Default: ./.onevoice/kafka-<port>.",
        file_okay=False,
    ),
]


@broker_app.command("start")
def start(
    port: PortOpt = 9092,
    data_dir: DataDirOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output; print only the address.")] = False,
    secure: Annotated[bool, typer.Option(
        "--secure", help="SASL_SSL only (SCRAM-SHA-512, a CA made here), ACLs per principal (admin, onevoice, "
                         "inbox, erp, crm, finance); prints each principal's ONEVOICE_KAFKA_* settings.")] = False,
) -> None:
    """Start the broker (a no-op when it already runs) and print its bootstrap address.

    Returns once the broker answers metadata requests; its log is <data-dir>/broker.log.
    Use the printed address as ONEVOICE_KAFKA_BOOTSTRAP. With --secure, then for each principal a
    line `# principal NAME` and the ONEVOICE_KAFKA_* lines its clients need (passwords included:
    they are made once per data directory and kept in <data-dir>/secure/, readable by you only).
    """
    try:
        address = start_broker(port, data_dir, quiet=quiet, secure=secure)
    except BrokerError as exc:
        _err.print(Text("error: ", style="bold red") + Text(str(exc)), highlight=False)
        raise typer.Exit(1) from exc
    typer.echo(address)
    if secure:
        from services.devkit import broker_secure

        where = broker_status(data_dir, port).data_dir
        for principal in broker_secure.PRINCIPALS:
            typer.echo(f"# principal {principal}")
            for name, value in broker_secure.client_environment(where, address, principal).items():
                typer.echo(f"{name}={value}")


@broker_app.command("stop")
def stop(port: PortOpt = 9092, data_dir: DataDirOpt = None) -> None:
    """Stop the broker of --data-dir (default ./.onevoice/kafka-<port>): SIGTERM, SIGKILL after 30 s.

    Exits 0 whether or not it was running.
    """
    where = data_dir if data_dir is not None else default_data_dir(port)
    if stop_broker(data_dir, port):
        _err.print(f"Stopped the Kafka broker of {where}.", highlight=False)
    else:
        _err.print(f"No Kafka broker of {where} was running.", highlight=False)


@broker_app.command("status")
def status(port: PortOpt = 9092, data_dir: DataDirOpt = None) -> None:
    """Print whether the broker of --data-dir runs (exit 0) or not (exit 1)."""
    st = broker_status(data_dir, port)
    if st.running:
        typer.echo(f"running pid={st.pid} bootstrap={st.bootstrap} data_dir={st.data_dir}")
    else:
        typer.echo(f"stopped data_dir={st.data_dir}")
        raise typer.Exit(1)

"""`onevoice web` and `onevoice token …`: serve the inbox, hand out and withdraw personal access tokens.

Heavy imports (FastAPI, uvicorn) wait until a command runs, so `onevoice --help` stays quick.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

token_app = typer.Typer(help="Personal access tokens for the inbox and its API (only a digest is stored).",
                        no_args_is_help=True)


def web(host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    """Serve the KAM inbox (pages and the /api/v1 REST API) on the store and broker of `onevoice run`.

    Sign in with a token from `onevoice token create`. Several web processes may serve one store.
    """
    import uvicorn

    from services.config import Settings
    from services.web.app import create_app

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    uvicorn.run(create_app(Settings()), host=host, port=port, log_config=None, proxy_headers=False,
                server_header=False)


def _engine():
    from services.config import Settings
    from services.store.db import create_tables, make_engine

    engine = make_engine(Settings().database_url)
    create_tables(engine)
    return engine


@token_app.command("create")
def token_create(
    person_id: Annotated[str, typer.Argument(help="The person the token signs in (their id in the team events).")],
    admin: Annotated[bool, typer.Option("--admin", help="The holder sees every key account and alert.")] = False,
    expires_days: Annotated[float | None, typer.Option("--expires-days", min=0.001,
                                                       help="Days until it stops working (default: never).")] = None,
) -> None:
    """Make a token for PERSON_ID and print it once, alone on the last line (it cannot be shown again)."""
    from services.web.tokens import create_token

    if not person_id.strip() or len(person_id) > 128:
        raise typer.BadParameter("a person id is 1 to 128 characters", param_hint="PERSON_ID")
    token_id, token = create_token(_engine(), person_id, admin=admin, expires_days=expires_days)
    typer.echo(f"token {token_id} for {person_id}{' (admin)' if admin else ''}"
               f"{f', expires in {expires_days:g} days' if expires_days is not None else ''}; store it now, "
               f"it is shown only once:")
    typer.echo(token)


@token_app.command("list")
def token_list(person_id: Annotated[str | None, typer.Option("--person", help="Only this person's tokens.")] = None) -> None:
    """List tokens (ids, holders, validity; never the tokens themselves)."""
    from rich.console import Console
    from rich.table import Table

    from services.web.tokens import list_tokens

    table = Table("token id", "person", "admin", "created", "expires", "revoked", "last used")
    for row in list_tokens(_engine(), person_id):
        table.add_row(row["token_id"], row["person_id"], "yes" if row["admin"] else "", row["created_at"][:19],
                      (row["expires_at"] or "never")[:19], (row["revoked_at"] or "")[:19],
                      (row["last_used_at"] or "")[:19])
    Console().print(table)


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="The id `token list` shows.")]) -> None:
    """Revoke a token; browser sessions it opened end at once."""
    from services.web.tokens import revoke_token

    if not revoke_token(_engine(), token_id):
        typer.echo(f"no live token {token_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {token_id}")

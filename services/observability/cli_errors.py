"""How every onevoice command ends when something is wrong: a short message, or the traceback with --debug."""

from __future__ import annotations

import functools
import os
import sys

import click
import typer

from services.observability.errors import explain, mask_password

EXIT_SETUP = 2  # a setup mistake the message names
EXIT_UNEXPECTED = 3  # anything else: a bug to report
_state = {"debug": False}


def set_debug(enabled: bool) -> None:
    _state["debug"] = enabled


def debug_enabled() -> bool:
    return _state["debug"] or os.environ.get("ONEVOICE_DEBUG", "").lower() in ("1", "true", "yes")


def _settings_or_none():
    try:
        from services.config import Settings

        return Settings()
    except Exception:
        return None


def report_failure(exc: BaseException) -> int:
    """Print what went wrong to stderr (no traceback, no password); returns the exit code."""
    message = explain(exc, _settings_or_none())
    if message is not None:
        code = EXIT_SETUP
    else:
        code = EXIT_UNEXPECTED
        detail = mask_password(str(exc)).splitlines()[0][:300] if str(exc) else ""
        message = (f"unexpected error: {type(exc).__name__}{': ' + detail if detail else ''}\n"
                   "Run again with --debug (or ONEVOICE_DEBUG=1) for the traceback, and please report it.")
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    return code


def friendly_errors(command):
    """Decorate a command so that a failure ends in `report_failure`'s lines and a non-zero exit."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.ClickException, click.exceptions.Exit, KeyboardInterrupt,
                SystemExit):
            raise
        except BaseException as exc:
            if debug_enabled():
                raise
            raise typer.Exit(report_failure(exc)) from None

    return wrapper

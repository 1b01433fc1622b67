"""Setup mistakes as one or two lines that name the setting and say what to do.

`explain(exc)` recognises what a user can get wrong before the service ever processes an
event — an unreachable broker or database, a refused password, a busy port, a URL that is no
database URL, a store whose schema is behind or ahead of this onevoice, a setting with a value
it does not take — and returns the message; anything else returns None (a bug: the command
line shows the traceback). Messages never contain a password: URLs are shown with `***`.
"""

from __future__ import annotations

import re
import socket

from pydantic import ValidationError

from services.observability.health import PortBusy

_PASSWORD_IN_URL = re.compile(r"(?P<head>://[^:/@\s]*:)(?P<password>[^@\s]*)@")


class SetupMistake(RuntimeError):
    """A mistake whose message already says what is wrong and what to do (at most two lines)."""


class SchemaMismatch(RuntimeError):
    """The store's schema is not the one this onevoice was built for."""

    def __init__(self, url: str, current: str | None, head: str):
        super().__init__(f"store at revision {current}, this onevoice needs {head}")
        self.url, self.current, self.head = url, current, head


def mask_password(text: str) -> str:
    """Any `scheme://user:password@host` in `text` with the password replaced by ***."""
    return _PASSWORD_IN_URL.sub(lambda m: f"{m['head']}***@", text)


def _settings_value(settings, name: str, default: str = "?") -> str:
    return mask_password(str(getattr(settings, name, default))) if settings is not None else default


def explain(exc: BaseException, settings=None) -> str | None:
    """The user's mistake behind `exc`, in at most two lines, or None when it is not a setup mistake."""
    for error in _chain(exc):
        message = _explain_one(error, settings)
        if message:
            return mask_password(message)
    return None


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                yield from _chain(inner)
        exc = exc.__cause__ or exc.__context__


def _explain_one(exc: BaseException, settings) -> str | None:
    if isinstance(exc, SetupMistake):
        return str(exc)
    if isinstance(exc, ValidationError):
        return _invalid_settings(exc)
    if type(exc).__name__ == "SettingsError":  # services/config.py: already names the variables, quotes no value
        return f"{exc}\nCorrect the variable (environment or .env) or unset it for its default."
    if isinstance(exc, PortBusy):
        return (f"ONEVOICE_METRICS_PORT={exc.port}: {exc.host}:{exc.port} is already in use by another process.\n"
                "Choose a free port, or set ONEVOICE_METRICS_PORT=0 to turn /metrics, /healthz and /readyz off.")
    if isinstance(exc, socket.gaierror) or (isinstance(exc, OSError) and exc.errno == 99):  # EADDRNOTAVAIL
        host = _settings_value(settings, "metrics_host")
        return (f"ONEVOICE_METRICS_HOST={host} is not an address of this machine ({exc.strerror or exc}).\n"
                "Use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface).")
    if isinstance(exc, SchemaMismatch):
        url = mask_password(exc.url)
        if exc.current is None or exc.current < exc.head:
            return (f"the store at {url} (ONEVOICE_DATABASE_URL) has no onevoice schema or an older one "
                    f"(revision {exc.current or 'none'}, needed {exc.head}).\n"
                    "Run `onevoice run` once against it: it creates and migrates the tables at start.")
        return (f"the store at {url} (ONEVOICE_DATABASE_URL) was migrated by a newer onevoice (revision "
                f"{exc.current}; this one knows up to {exc.head}).\nUpgrade onevoice, or point it at another database.")
    name = type(exc).__name__
    text = str(exc)
    if name == "KafkaConnectionError" or "Unable to bootstrap" in text:
        bootstrap = _settings_value(settings, "kafka_bootstrap")
        return (f"cannot reach the Kafka broker at {bootstrap} (ONEVOICE_KAFKA_BOOTSTRAP).\n"
                "Start one with `onevoice broker start`, or set ONEVOICE_KAFKA_BOOTSTRAP to your brokers' host:port.")
    if isinstance(exc, ValueError) and "unsupported database URL" in text or name in ("ArgumentError",
                                                                                      "NoSuchModuleError"):
        return (f"ONEVOICE_DATABASE_URL={_settings_value(settings, 'database_url')} is not a database URL onevoice "
                "can use.\nWrite sqlite:///relative.db, sqlite:////absolute/path.db or postgresql://user@host:port/db.")
    return _database_problem(exc, text, settings)


def _database_problem(exc: BaseException, text: str, settings) -> str | None:
    url = _settings_value(settings, "database_url")
    lowered = text.lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        user = re.search(r'for user "([^"]+)"', text)
        return (f"the database at {url} refused the login{' of user ' + user[1] if user else ''} "
                "(ONEVOICE_DATABASE_URL).\nCheck the user name and password in ONEVOICE_DATABASE_URL.")
    missing = re.search(r'database "([^"]+)" does not exist', text)
    if missing:
        return (f"the database {missing[1]} does not exist on the server of {url} (ONEVOICE_DATABASE_URL).\n"
                f"Create it (e.g. `createdb {missing[1]}`) or name an existing one.")
    if "unable to open database file" in lowered:
        return (f"cannot open the SQLite file of {url} (ONEVOICE_DATABASE_URL).\n"
                "Check that its directory exists and is writable.")
    if re.search(r"no such table|relation \"[^\"]+\" does not exist", text):
        return (f"the store at {url} (ONEVOICE_DATABASE_URL) has no onevoice tables.\n"
                "Run `onevoice run` once against it: it creates and migrates the tables at start.")
    if type(exc).__module__.startswith(("psycopg", "sqlalchemy")) and any(
            marker in lowered for marker in ("connection refused", "could not translate host name", "timeout expired",
                                             "connection failed", "name or service not known", "no route to host")):
        return (f"cannot reach the database at {url} (ONEVOICE_DATABASE_URL).\n"
                "Is the server running and reachable there? Start it or correct the host and port.")
    return None


def _invalid_settings(exc: ValidationError) -> str:
    """Which variables are wrong and why, without quoting their values (one may hold a password)."""
    lines = []
    for error in exc.errors(include_input=False)[:2]:
        field = str(error["loc"][0]) if error.get("loc") else "?"
        lines.append(f"ONEVOICE_{field.upper()} is not a valid value: {error['msg']}. "
                     "Correct it or unset it for the default.")
    return "\n".join(lines)

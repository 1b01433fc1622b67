"""Logging for every onevoice command: a level, text or JSON lines, and quiet third parties.

JSON lines carry stable keys — `ts`, `level`, `logger`, `message` — plus the structured
fields a line was logged with (`extra={"fields": {...}}`, e.g. a batch's counts) and `error`
with the traceback when there is one. Start-up chatter of libraries (alembic's migration
context lines, aiokafka's "coordinator not available" while a fresh broker elects one) is
muted unless `verbose`, when everything at DEBUG is shown.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

STABLE_KEYS = ("ts", "level", "logger", "message")
# Transient conditions aiokafka logs at ERROR while a broker or group coordinator is starting.
STARTUP_NOISE = ("GroupCoordinatorNotAvailableError", "NotCoordinatorForGroupError", "CoordinatorNotAvailable",
                 "Group Coordinator Request failed", "CoordinatorLoadInProgress",
                 "Marking the coordinator dead")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
                .replace("+00:00", "Z"),
                "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update({k: v for k, v in fields.items() if k not in STABLE_KEYS})
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class StartupNoiseFilter(logging.Filter):
    """Drops the library lines that say "not yet" while a broker or coordinator comes up."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not any(marker in text for marker in STARTUP_NOISE)


def setup_logging(level: str = "INFO", fmt: str = "text", *, verbose: bool = False, stream=None) -> None:
    """Configure the root logger once per command (replacing earlier handlers)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else level)
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)  # at DEBUG it would echo every statement and row
    if verbose:
        for name in ("alembic", "aiokafka"):
            logging.getLogger(name).setLevel(logging.NOTSET)
        return
    handler.addFilter(StartupNoiseFilter())
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)

"""Calm outages: the database or the broker away is a state of the process, not a stream of errors.

Every part of `onevoice run` (consumer, outbox relay, timers, ops, daily review) reports its
failures and successes against a dependency ("database", "Kafka") to one process-wide
`Outages`; it logs ONE line when a dependency goes away (with the cause), a reminder at most
every 30 s while it stays away, and one line when it is back. aiokafka's own ERROR/WARNING
lines (it logs every reconnection attempt, ten a second) pass through `KafkaLogCalmer`, which
turns connection trouble into such a report and lets any other line of a kind through at most
once per 30 s. `wait_for_dependencies` is the start-up side: wait, with backoff, until both
answer, or give up after ONEVOICE_STARTUP_WAIT_S with one line naming what is missing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from services.redact import mask_text, mask_url

log = logging.getLogger("onevoice.outage")
REMINDER_S = 30.0
#: aiokafka goes on logging for a moment after the broker is back (rejoining, a stale connection):
#: library lines within this time after "back" do not open a new outage.
GRACE_S = 20.0
DATABASE = "database"
KAFKA = "Kafka"


def describe(exc: BaseException | str) -> str:
    """A short, password-free cause: `OperationalError: connection refused …` (first line, ≤ 240 chars)."""
    if isinstance(exc, str):
        text = exc
    else:
        inner = getattr(exc, "orig", None) or exc
        first = (str(inner).strip().splitlines() or [""])[0]
        text = f"{type(inner).__name__}: {first}" if first else type(inner).__name__
    text = mask_text(text)
    return text if len(text) <= 240 else text[:237] + "…"


@dataclass
class _State:
    since: float
    cause: str
    next_reminder: float
    failures: int = 1


@dataclass
class Outages:
    """Which dependencies are away right now, and the few log lines about them."""

    reminder_s: float = REMINDER_S
    grace_s: float = GRACE_S
    clock: object = time.monotonic
    logger: logging.Logger = field(default_factory=lambda: log)
    _down: dict[str, _State] = field(default_factory=dict)
    _back_at: dict[str, float] = field(default_factory=dict)
    last_library_cause: dict[str, str] = field(default_factory=dict)
    lines: int = 0  # log lines written (tests count them)

    def is_down(self, dependency: str) -> bool:
        return dependency in self._down

    def failed(self, dependency: str, cause: BaseException | str, *, from_library: bool = False) -> None:
        """A try against `dependency` failed: the first line of an outage, else a reminder when due."""
        now = self.clock()
        text = describe(cause)
        if from_library:
            self.last_library_cause[dependency] = text
        state = self._down.get(dependency)
        if state is None:
            if from_library and now - self._back_at.get(dependency, -1e9) < self.grace_s:
                return
            self._down[dependency] = _State(since=now, cause=text, next_reminder=now + self.reminder_s)
            self._log(logging.WARNING, "%s unavailable: %s (retrying with backoff; a reminder every %.0f s)",
                      dependency, text, self.reminder_s)
            return
        state.failures += 1
        if not from_library or state.cause.startswith("aiokafka"):
            state.cause = text
        if now >= state.next_reminder:
            state.next_reminder = now + self.reminder_s
            self._log(logging.WARNING, "%s still unavailable after %.0f s: %s", dependency, now - state.since,
                      state.cause)

    def recovered(self, dependency: str) -> None:
        """A try against `dependency` succeeded: one line if it had been away."""
        if dependency not in self._down:  # the common case: one dict lookup
            return
        state = self._down.pop(dependency)
        now = self.clock()
        self._back_at[dependency] = now
        self._log(logging.WARNING, "%s is back after %.0f s", dependency, now - state.since)

    def down_for(self, dependency: str) -> float:
        state = self._down.get(dependency)
        return 0.0 if state is None else self.clock() - state.since

    def _log(self, level: int, message: str, *args) -> None:
        self.lines += 1
        self.logger.log(level, message, *args)


#: The process's one tracker.
OUTAGES = Outages()

# aiokafka lines that mean "cannot reach / talk to the broker"
_CONNECTION_WORDS = ("unable connect", "unable to connect", "unable to bootstrap", "connect call failed",
                     "connection", "nodenotready", "kafkaconnectionerror", "request timed out",
                     "unable to request metadata", "unable to update metadata", "coordinator dead",
                     "kafkatimeouterror", "authentication", "sasl", "ssl", "certificate", "unable to find")


class KafkaLogCalmer(logging.Filter):
    """On the process's log handlers: aiokafka warnings and errors become outage reports, or pass rarely.

    Connection trouble is reported to `OUTAGES` (whose lines say the same, once) and dropped; any
    other aiokafka line passes the first time and then at most once per `every_s` per message kind.
    SQLAlchemy's pool errors (a dropped connection that cannot be reset) are database trouble alike.
    """

    def __init__(self, outages: Outages = OUTAGES, every_s: float = REMINDER_S, clock=time.monotonic):
        super().__init__()
        self.outages = outages
        self.every_s = every_s
        self.clock = clock
        self._passed: dict[tuple[str, str], float] = {}
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        if record.name.startswith("sqlalchemy.pool"):
            # "Exception during reset or similar" with a traceback, for every pooled connection the server dropped
            cause = record.exc_info[1] if record.exc_info and record.exc_info[1] else str(record.msg)
            self.outages.failed(DATABASE, cause, from_library=True)
            self.dropped += 1
            return False
        if not record.name.startswith("aiokafka"):
            return True
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        lowered = message.lower()
        if any(word in lowered for word in _CONNECTION_WORDS):
            self.outages.failed(KAFKA, f"aiokafka: {message}", from_library=True)
            self.dropped += 1
            return False
        kind = (record.name, str(record.msg)[:80])
        now = self.clock()
        if now < self._passed.get(kind, -1e9) + self.every_s:
            self.dropped += 1
            return False
        self._passed[kind] = now
        return True


def install_calm_logging(secrets=()) -> None:
    """Put the aiokafka calmer and the secrets filter on every root handler (idempotent)."""
    from services.redact import install_secrets_filter

    install_secrets_filter(secrets)
    calmer = KafkaLogCalmer()
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, KafkaLogCalmer)]:
            handler.removeFilter(old)
        handler.addFilter(calmer)
    # aiokafka's own loggers need not even build records below WARNING
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLogger("aiokafka").level))


class StartupFailed(RuntimeError):
    """A dependency did not answer within ONEVOICE_STARTUP_WAIT_S; the text is one line, password-free."""


async def _database_answers(engine) -> None:
    from sqlalchemy import text

    def probe():
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    await asyncio.to_thread(probe)


async def _kafka_answers(settings) -> None:
    from services import kafka_clients

    admin = kafka_clients.admin(settings, request_timeout_ms=5000, client_id="onevoice-startup-probe")
    try:
        await asyncio.wait_for(admin.start(), 15)
        await asyncio.wait_for(admin.list_topics(), 15)
    finally:
        try:
            await asyncio.wait_for(admin.close(), 5)
        except Exception:
            pass


async def wait_for_dependencies(settings, engine, stop: asyncio.Event | None = None,
                                outages: Outages = OUTAGES) -> bool:
    """Until the database and the broker both answer; False if `stop` was set meanwhile.

    Backoff 0.5 s doubling to 5 s; raises `StartupFailed` after `settings.startup_wait_s`.
    """
    deadline = time.monotonic() + settings.startup_wait_s
    delay = 0.5
    checks = {DATABASE: lambda: _database_answers(engine), KAFKA: lambda: _kafka_answers(settings)}
    where = {DATABASE: mask_url(settings.database_url), KAFKA: settings.kafka_bootstrap}
    pending = dict(checks)
    while True:
        for dependency in list(pending):
            try:
                await pending[dependency]()
            except Exception as exc:
                cause = describe(exc)
                library = outages.last_library_cause.get(dependency)
                if dependency == KAFKA and library:  # "Unable to bootstrap" says nothing; aiokafka's log said why
                    cause = f"{cause} ({library.removeprefix('aiokafka: ')})"
                outages.failed(dependency, f"{where[dependency]}: {cause}")
                continue
            outages.recovered(dependency)
            del pending[dependency]
        if not pending:
            return True
        if time.monotonic() >= deadline:
            missing = ", ".join(f"{dep} at {where[dep]} ({outages._down[dep].cause.split(': ', 1)[-1]})"
                                if dep in outages._down else dep for dep in pending)
            raise StartupFailed(f"gave up after {settings.startup_wait_s:.0f} s (ONEVOICE_STARTUP_WAIT_S) "
                                f"waiting for {missing}")
        pause = min(delay, max(0.0, deadline - time.monotonic()))
        delay = min(delay * 2, 5.0)
        if stop is None:
            await asyncio.sleep(pause)
        else:
            try:
                await asyncio.wait_for(stop.wait(), pause)
                return False
            except asyncio.TimeoutError:
                pass


def kafka_unavailable(exc: BaseException) -> bool:
    """The broker cannot be reached or did not answer in time (not: it refused what we asked)."""
    from aiokafka import errors

    if isinstance(exc, (errors.KafkaConnectionError, errors.KafkaTimeoutError, errors.NodeNotReadyError,
                        errors.RequestTimedOutError, errors.NotLeaderForPartitionError,
                        errors.LeaderNotAvailableError, errors.CoordinatorNotAvailableError,
                        errors.NotCoordinatorError, asyncio.TimeoutError, ConnectionError)):
        return True
    return isinstance(exc, errors.KafkaError) and bool(getattr(exc, "retriable", False))


def report_outage(exc: BaseException, outages: Outages = OUTAGES) -> bool:
    """Report `exc` to `outages` when it means the database or the broker is away; True if it did."""
    from services.store.errors import transient_database_error

    if transient_database_error(exc):
        outages.failed(DATABASE, exc)
        return True
    if kafka_unavailable(exc):
        outages.failed(KAFKA, exc)
        return True
    return False

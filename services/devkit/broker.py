"""A local single-node Apache Kafka (KRaft) broker: start it, wait until it answers, stop it, say whether it runs.

No Docker: one JVM runs as broker *and* controller on ``127.0.0.1:<port>``, from the jars of
services/devkit/kafka_jars.py (Maven Central, fetched once), configured in its data directory by
services/devkit/broker_config.py; ``secure=True`` adds SASL_SSL, SCRAM users and ACLs
(services/devkit/broker_secure.py).

Public API::

    start_broker(port=9092, data_dir=None, *, quiet=False, secure=False) -> "127.0.0.1:9092"
    stop_broker(data_dir=None, port=9092) -> bool
    broker_status(data_dir=None, port=9092) -> BrokerStatus
    ensure_kafka_jars(*, quiet=False) -> Path          # pre-fetch the jars

Layout (defaults relative to the current directory):

* cache: ``.onevoice/cache/kafka-<version>/libs`` (``ONEVOICE_CACHE_DIR`` overrides
  the cache root ``.onevoice/cache``)
* data:  ``.onevoice/kafka-<port>/`` holding ``server.properties``,
  ``log4j2.properties``, ``broker.log``, ``broker.out``, ``broker.pid``, ``logs/``
  (and, with ``secure=True``, ``secure/``: CA, broker key store, passwords; services/devkit/broker_secure.py)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from services.devkit.broker_common import HOST, BrokerError, bootstrap_of, file_lock, port_bindable, port_open, spinner
from services.devkit.broker_config import (BROKER_LOG, LOG4J_FILE, PROPS_FILE, default_data_dir, format_storage,
                                           read_props, resolve_data_dir, write_config)
from services.devkit.kafka_jars import KAFKA_VERSION, cache_root, ensure_kafka_jars, ensure_tools_jar, find_java

__all__ = [
    "KAFKA_VERSION",
    "BrokerError",
    "BrokerStatus",
    "broker_status",
    "cache_root",
    "default_data_dir",
    "ensure_kafka_jars",
    "start_broker",
    "stop_broker",
]

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
PID_FILE = "broker.pid"
BROKER_OUT = "broker.out"


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    port: int
    bootstrap: str
    data_dir: Path


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no {path.name})"
    return "\n".join(text.splitlines()[-lines:]) or f"({path.name} is empty)"


# --------------------------------------------------------------------------- process bookkeeping


def _read_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def _is_our_broker(pid: int, data_dir: Path) -> bool:
    """True when ``pid`` is alive (not a zombie) and is a Kafka broker started on this data dir."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            _reap(pid)
            return False
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    args = [a.decode(errors="replace") for a in cmdline]
    return "kafka.Kafka" in args and str(data_dir / PROPS_FILE) in args


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _running_pid(data_dir: Path) -> int | None:
    pid = _read_pid(data_dir)
    if pid is not None and _is_our_broker(pid, data_dir):
        return pid
    return None


def broker_status(data_dir: Path | str | None = None, port: int = 9092) -> BrokerStatus:
    """Whether a broker started from ``data_dir`` runs, and where it listens."""
    data_dir = resolve_data_dir(data_dir, port)
    pid = _running_pid(data_dir)
    listeners = read_props(data_dir / PROPS_FILE).get("listeners", "")
    for item in listeners.split(","):
        if item.startswith(("PLAINTEXT://", "CLIENT://")):
            with contextlib.suppress(ValueError):
                port = int(item.rsplit(":", 1)[1])
    return BrokerStatus(running=pid is not None, pid=pid, port=port, bootstrap=bootstrap_of(port), data_dir=data_dir)


# --------------------------------------------------------------------------- readiness


async def _metadata_probe(bootstrap: str, options: dict | None = None) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, client_id="onevoice-broker-probe",
                                **(options or {}))
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return bool(cluster.get("brokers"))
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def _metadata_ok(bootstrap: str, data_dir: Path | None = None) -> bool:
    """One metadata round trip (as `admin` on a secure broker); runs in its own thread + loop so callers
    may already be inside asyncio."""
    from services.devkit import broker_secure

    def probe() -> bool:
        options = (broker_secure.aiokafka_options(data_dir, "admin")
                   if data_dir is not None and broker_secure.is_secure(data_dir) else None)
        return asyncio.run(asyncio.wait_for(_metadata_probe(bootstrap, options), 8))

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            return pool.submit(probe).result(timeout=10)
        except Exception:
            return False


def _wait_ready(pid: int | None, port: int, data_dir: Path, deadline: float,
                proc: subprocess.Popen | None = None) -> None:
    """Until the broker answers; `proc` (the broker this call started) tells authoritatively whether it exited
    (reading /proc/<pid>/cmdline of a JVM that is just starting gave a false "exited" under load, and the
    healthy broker was then stopped)."""
    bootstrap = bootstrap_of(port)
    while True:
        exited = proc.poll() is not None if proc is not None else pid is not None and not _is_our_broker(pid, data_dir)
        if exited:
            status = f", exit status {proc.returncode}" if proc is not None else ""
            raise BrokerError(
                f"The Kafka broker (pid {pid}{status}) exited during start-up. Tail of {data_dir / BROKER_LOG}:\n"
                f"{_tail(data_dir / BROKER_LOG)}\n--- {data_dir / BROKER_OUT}:\n{_tail(data_dir / BROKER_OUT, 20)}"
            )
        if port_open(port) and _metadata_ok(bootstrap, data_dir):
            return
        if time.monotonic() > deadline:
            raise BrokerError(
                f"The Kafka broker on {bootstrap} was not ready after {START_TIMEOUT_S:.0f}s. "
                f"Tail of {data_dir / BROKER_LOG}:\n{_tail(data_dir / BROKER_LOG)}"
            )
        time.sleep(0.25)


# --------------------------------------------------------------------------- start / stop


def start_broker(port: int = 9092, data_dir: Path | None = None, *, quiet: bool = False, secure: bool = False) -> str:
    """Start a local single-node Kafka (KRaft) on ``127.0.0.1:port``; return its bootstrap address.

    A no-op when the broker of ``data_dir`` (default ``./.onevoice/kafka-<port>``) already runs.
    Returns once the broker answers a metadata request; raises :class:`BrokerError` (with the tail
    of the broker log) when it does not within 60 s. ``secure``: SASL_SSL with SCRAM users and ACLs
    (services/devkit/broker_secure.py; ``broker_secure.client_environment`` gives a principal's settings).
    """
    from services.devkit import broker_secure

    data_dir = resolve_data_dir(data_dir, port)
    data_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    formatted = (data_dir / "logs" / "meta.properties").exists()
    if formatted and broker_secure.is_secure(data_dir) != secure:
        raise BrokerError(f"The broker data in {data_dir} was made {'with' if not secure else 'without'} --secure; "
                          f"start it the same way, or use another --data-dir.")
    with file_lock(data_dir / ".lock"):
        pid = _running_pid(data_dir)
        if pid is not None:
            status = broker_status(data_dir, port)
            if status.port != port:
                raise BrokerError(
                    f"The broker of {data_dir} already runs on port {status.port} (pid {pid}), not {port}; "
                    f"stop it first or use another --data-dir."
                )
            with spinner(quiet, f"Waiting for the Kafka broker on {bootstrap_of(port)}…"):
                _wait_ready(pid, port, data_dir, deadline)
            if secure:
                broker_secure.ensure_acls(find_java(), ensure_kafka_jars(quiet=True), ensure_tools_jar(),
                                          data_dir, bootstrap_of(port))
            return bootstrap_of(port)
        (data_dir / PID_FILE).unlink(missing_ok=True)
        if not port_bindable(port):
            raise BrokerError(
                f"Port {port} on {HOST} is already in use by another process (not the broker of {data_dir}). "
                f"Pick another --port, or stop what listens there."
            )

        libs = ensure_kafka_jars(quiet=quiet)
        java = find_java()
        tools = ensure_tools_jar() if secure else None
        with spinner(quiet, f"Starting Apache Kafka {KAFKA_VERSION} on {bootstrap_of(port)}"
                            f"{' (SASL_SSL, ACLs)' if secure else ''}…"):
            if secure:
                broker_secure.ensure_certificates(data_dir, broker_secure.credentials(data_dir)["keystore"])
            props_path = write_config(data_dir, port, secure)
            format_storage(java, libs, data_dir, props_path, broker_secure.scram_arguments(data_dir) if secure else [])
            cmd = [
                java,
                # The JVM options of Kafka's own kafka-server-start.sh (KAFKA_HEAP_OPTS and
                # KAFKA_JVM_PERFORMANCE_OPTS): with a heap that started at 256 MB, G1's concurrent
                # marking took a tenth of a core while onevoice ran at full speed.
                "-Xms1g",
                "-Xmx1g",
                "-server",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-XX:InitiatingHeapOccupancyPercent=35",
                "-XX:+ExplicitGCInvokesConcurrent",
                "-XX:MaxInlineLevel=15",
                "-XX:+ExitOnOutOfMemoryError",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={data_dir / LOG4J_FILE}",
                f"-Dkafka.logs.dir={data_dir}",
                "-cp",
                f"{libs}/*",
                "kafka.Kafka",
                str(props_path),
            ]
            with open(data_dir / BROKER_OUT, "ab") as out:
                proc = subprocess.Popen(
                    cmd,
                    cwd=data_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            (data_dir / PID_FILE).write_text(f"{proc.pid}\n")
            try:
                _wait_ready(proc.pid, port, data_dir, deadline, proc)
                if secure:
                    broker_secure.ensure_acls(java, libs, tools, data_dir, bootstrap_of(port))
            except BrokerError:
                _terminate(proc.pid, data_dir, timeout=10)
                (data_dir / PID_FILE).unlink(missing_ok=True)
                raise
    return bootstrap_of(port)


def _terminate(pid: int, data_dir: Path, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not _is_our_broker(pid, data_dir):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(50):
        _reap(pid)
        if not _is_our_broker(pid, data_dir):
            return
        time.sleep(0.1)


def stop_broker(data_dir: Path | None = None, port: int = 9092) -> bool:
    """Stop the broker of ``data_dir`` (default ``./.onevoice/kafka-<port>``): SIGTERM, after 30 s SIGKILL.

    Returns whether a broker was running.
    """
    data_dir = resolve_data_dir(data_dir, port)
    pid = _running_pid(data_dir)
    if pid is None:
        (data_dir / PID_FILE).unlink(missing_ok=True)
        return False
    _terminate(pid, data_dir, timeout=STOP_TIMEOUT_S)
    (data_dir / PID_FILE).unlink(missing_ok=True)
    return True

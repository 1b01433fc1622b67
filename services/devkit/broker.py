"""A local single-node Apache Kafka (KRaft) broker, built from Maven Central jars.

No Docker, no Kafka download from apache.org: the broker's jars are fetched once
with Maven (``mvn dependency:copy-dependencies`` on a small pom shipped in this
module) into a project-local cache, then reused. One JVM runs as broker *and*
controller (KRaft), listening on ``127.0.0.1:<port>``; everything it writes
(logs, metadata, ``broker.log``, pid file) lives under its data directory.

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
import base64
import concurrent.futures
import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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

KAFKA_VERSION = "4.1.1"
#: log4j-core version that kafka_2.13 KAFKA_VERSION depends on; the SLF4J 1.x binding must match it.
LOG4J_VERSION = "2.24.3"
HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0

PID_FILE = "broker.pid"
PROPS_FILE = "server.properties"
LOG4J_FILE = "log4j2.properties"
BROKER_LOG = "broker.log"
BROKER_OUT = "broker.out"

_POM = f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by onevoice (services/devkit/broker.py): the jars of a local Apache Kafka broker. -->
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 http://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.onevoice</groupId>
  <artifactId>onevoice-kafka-broker</artifactId>
  <version>{KAFKA_VERSION}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{KAFKA_VERSION}</version>
    </dependency>
    <!-- Kafka brings slf4j-api 1.7.x and log4j2: the SLF4J 1.x binding, same version as log4j-core. -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """\
# Written by onevoice (services/devkit/broker.py): broker logs go to {log}
status = warn
name = onevoice-broker
shutdownHook = disable
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.filePattern = {log}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


class BrokerError(RuntimeError):
    """The local broker could not be prepared, started or stopped."""


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    port: int
    bootstrap: str
    data_dir: Path


# --------------------------------------------------------------------------- paths


def cache_root() -> Path:
    """Root of onevoice's download cache: ``$ONEVOICE_CACHE_DIR`` or ``./.onevoice/cache``."""
    env = os.environ.get("ONEVOICE_CACHE_DIR")
    return (Path(env) if env else Path.cwd() / ".onevoice" / "cache").expanduser().resolve()


def default_data_dir(port: int = 9092) -> Path:
    """Where a broker on ``port`` keeps its data when no data dir is given."""
    return (Path.cwd() / ".onevoice" / f"kafka-{port}").resolve()


def _resolve_data_dir(data_dir: Path | str | None, port: int) -> Path:
    return Path(data_dir).expanduser().resolve() if data_dir is not None else default_data_dir(port)


def _bootstrap(port: int) -> str:
    return f"{HOST}:{port}"


# --------------------------------------------------------------------------- small helpers


def _console(quiet: bool):
    if quiet:
        return None
    from rich.console import Console

    return Console(stderr=True)


@contextlib.contextmanager
def _status(quiet: bool, message: str) -> Iterator[None]:
    console = _console(quiet)
    if console is None:
        yield
        return
    with console.status(message):
        yield


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _port_bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no {path.name})"
    return "\n".join(text.splitlines()[-lines:]) or f"({path.name} is empty)"


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise BrokerError("`java` not found: the local Kafka broker needs a Java 17+ runtime on PATH (or JAVA_HOME).")
    return found


def _read_props(path: Path) -> dict[str, str]:
    props: dict[str, str] = {}
    try:
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                props[key.strip()] = value.strip()
    except OSError:
        pass
    return props


# --------------------------------------------------------------------------- jars


def _kafka_cache_dir() -> Path:
    return cache_root() / f"kafka-{KAFKA_VERSION}"


def ensure_kafka_jars(*, quiet: bool = False) -> Path:
    """Return the directory holding the broker's jars, downloading them with Maven the first time."""
    base = _kafka_cache_dir()
    libs = base / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    with _file_lock(base / ".lock"):
        if marker.exists():  # another process finished the download while we waited
            return libs
        mvn = shutil.which("mvn")
        if not mvn:
            raise BrokerError(
                "`mvn` (Apache Maven) not found: it fetches the Kafka broker jars from Maven Central "
                "the first time. Install Maven (e.g. `apt-get install maven`)."
            )
        pom = base / "pom.xml"
        pom.write_text(_POM)
        staging = base / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={staging}"]
        started = time.monotonic()
        with _status(quiet, f"Downloading Apache Kafka {KAFKA_VERSION} jars from Maven Central (first run only)…"):
            proc = subprocess.run(cmd, cwd=base, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            out = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
            raise BrokerError(f"Fetching the Kafka jars failed ({' '.join(cmd)}; exit {proc.returncode}):\n{out}")
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        marker.write_text(f"kafka_2.13 {KAFKA_VERSION}, fetched in {time.monotonic() - started:.1f}s\n")
        console = _console(quiet)
        if console is not None:
            n = len(list(libs.glob("*.jar")))
            console.print(f"[green]✓[/] Kafka {KAFKA_VERSION}: {n} jars in {libs} ({time.monotonic() - started:.0f}s)")
    return libs


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
    data_dir = _resolve_data_dir(data_dir, port)
    pid = _running_pid(data_dir)
    listeners = _read_props(data_dir / PROPS_FILE).get("listeners", "")
    for item in listeners.split(","):
        if item.startswith(("PLAINTEXT://", "CLIENT://")):
            with contextlib.suppress(ValueError):
                port = int(item.rsplit(":", 1)[1])
    return BrokerStatus(running=pid is not None, pid=pid, port=port, bootstrap=_bootstrap(port), data_dir=data_dir)


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
    bootstrap = _bootstrap(port)
    while True:
        exited = proc.poll() is not None if proc is not None else pid is not None and not _is_our_broker(pid, data_dir)
        if exited:
            status = f", exit status {proc.returncode}" if proc is not None else ""
            raise BrokerError(
                f"The Kafka broker (pid {pid}{status}) exited during start-up. Tail of {data_dir / BROKER_LOG}:\n"
                f"{_tail(data_dir / BROKER_LOG)}\n--- {data_dir / BROKER_OUT}:\n{_tail(data_dir / BROKER_OUT, 20)}"
            )
        if _port_open(port) and _metadata_ok(bootstrap, data_dir):
            return
        if time.monotonic() > deadline:
            raise BrokerError(
                f"The Kafka broker on {bootstrap} was not ready after {START_TIMEOUT_S:.0f}s. "
                f"Tail of {data_dir / BROKER_LOG}:\n{_tail(data_dir / BROKER_LOG)}"
            )
        time.sleep(0.25)


# --------------------------------------------------------------------------- start / stop


def _random_cluster_id() -> str:
    """Same shape as ``kafka.tools.StorageTool random-uuid`` (Kafka's Uuid.randomUuid), without a JVM start."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _write_config(data_dir: Path, port: int, secure: bool = False) -> Path:
    props_path = data_dir / PROPS_FILE
    old = _read_props(props_path)
    controller_port = None
    with contextlib.suppress(KeyError, ValueError):
        controller_port = int(old["controller.quorum.voters"].rsplit(":", 1)[1])
    if controller_port is None or controller_port == port or not _port_bindable(controller_port):
        controller_port = _free_port()
        while controller_port == port:
            controller_port = _free_port()
    log_dir = data_dir / "logs"
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": "6",
        "default.replication.factor": "1",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "min.insync.replicas": "1",
        "group.initial.rebalance.delay.ms": "0",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "log.retention.hours": "168",
        "num.network.threads": "2",
        "num.io.threads": "4",
    }
    if secure:
        from services.devkit import broker_secure

        props.update(broker_secure.broker_properties(data_dir, HOST, port, controller_port))
    body = "# Written by onevoice (services/devkit/broker.py) on each start.\n"
    body += "".join(f"{k}={v}\n" for k, v in props.items())
    fd = os.open(props_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # a secure broker's holds passwords
    with os.fdopen(fd, "w") as fh:
        fh.write(body)
    os.chmod(props_path, 0o600)
    (data_dir / LOG4J_FILE).write_text(_LOG4J2.format(log=data_dir / BROKER_LOG))
    return props_path


def _format_storage(java: str, libs: Path, data_dir: Path, props_path: Path, extra: list[str] = ()) -> None:
    if (data_dir / "logs" / "meta.properties").exists():
        return
    cmd = [
        java,
        f"-Dlog4j2.configurationFile={data_dir / LOG4J_FILE}",
        "-cp",
        f"{libs}/*",
        "kafka.tools.StorageTool",
        "format",
        "-t",
        _random_cluster_id(),
        "-c",
        str(props_path),
        *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        from services.redact import mask_text

        raise BrokerError(f"Formatting Kafka storage in {data_dir / 'logs'} failed:\n"
                          f"{mask_text(proc.stdout + proc.stderr, _passwords(data_dir))}")


def _passwords(data_dir: Path) -> list[str]:
    from services.devkit import broker_secure

    return list(broker_secure.credentials(data_dir).values()) if broker_secure.is_secure(data_dir) else []


def start_broker(port: int = 9092, data_dir: Path | None = None, *, quiet: bool = False, secure: bool = False) -> str:
    """Start a local single-node Kafka (KRaft) on ``127.0.0.1:port``; return its bootstrap address.

    A no-op when the broker of ``data_dir`` (default ``./.onevoice/kafka-<port>``) already runs.
    Returns once the broker answers a metadata request; raises :class:`BrokerError` (with the tail
    of the broker log) when it does not within 60 s. ``secure``: SASL_SSL with SCRAM users and ACLs
    (services/devkit/broker_secure.py; ``broker_secure.client_environment`` gives a principal's settings).
    """
    from services.devkit import broker_secure

    data_dir = _resolve_data_dir(data_dir, port)
    data_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    formatted = (data_dir / "logs" / "meta.properties").exists()
    if formatted and broker_secure.is_secure(data_dir) != secure:
        raise BrokerError(f"The broker data in {data_dir} was made {'with' if not secure else 'without'} --secure; "
                          f"start it the same way, or use another --data-dir.")
    with _file_lock(data_dir / ".lock"):
        pid = _running_pid(data_dir)
        if pid is not None:
            status = broker_status(data_dir, port)
            if status.port != port:
                raise BrokerError(
                    f"The broker of {data_dir} already runs on port {status.port} (pid {pid}), not {port}; "
                    f"stop it first or use another --data-dir."
                )
            with _status(quiet, f"Waiting for the Kafka broker on {_bootstrap(port)}…"):
                _wait_ready(pid, port, data_dir, deadline)
            if secure:
                broker_secure.ensure_acls(_java(), ensure_kafka_jars(quiet=True),
                                          broker_secure.ensure_tools_jar(_kafka_cache_dir(), KAFKA_VERSION),
                                          data_dir, _bootstrap(port))
            return _bootstrap(port)
        (data_dir / PID_FILE).unlink(missing_ok=True)
        if not _port_bindable(port):
            raise BrokerError(
                f"Port {port} on {HOST} is already in use by another process (not the broker of {data_dir}). "
                f"Pick another --port, or stop what listens there."
            )

        libs = ensure_kafka_jars(quiet=quiet)
        java = _java()
        tools = broker_secure.ensure_tools_jar(_kafka_cache_dir(), KAFKA_VERSION) if secure else None
        with _status(quiet, f"Starting Apache Kafka {KAFKA_VERSION} on {_bootstrap(port)}"
                            f"{' (SASL_SSL, ACLs)' if secure else ''}…"):
            if secure:
                broker_secure.ensure_certificates(data_dir, broker_secure.credentials(data_dir)["keystore"])
            props_path = _write_config(data_dir, port, secure)
            _format_storage(java, libs, data_dir, props_path, broker_secure.scram_arguments(data_dir) if secure else [])
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
                    broker_secure.ensure_acls(java, libs, tools, data_dir, _bootstrap(port))
            except BrokerError:
                _terminate(proc.pid, data_dir, timeout=10)
                (data_dir / PID_FILE).unlink(missing_ok=True)
                raise
    return _bootstrap(port)


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
    data_dir = _resolve_data_dir(data_dir, port)
    pid = _running_pid(data_dir)
    if pid is None:
        (data_dir / PID_FILE).unlink(missing_ok=True)
        return False
    _terminate(pid, data_dir, timeout=STOP_TIMEOUT_S)
    (data_dir / PID_FILE).unlink(missing_ok=True)
    return True

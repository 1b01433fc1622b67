"""A local broker's data directory: its ``server.properties`` and ``log4j2.properties``, its formatted storage.

One JVM runs as broker *and* controller (KRaft), listening on ``127.0.0.1:<port>``; everything it
writes (logs, metadata, ``broker.log``, pid file) lives under its data directory, by default
``.onevoice/kafka-<port>/`` (with ``secure=True`` also ``secure/``: CA, broker key store,
passwords; services/devkit/broker_secure.py).
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import uuid
from pathlib import Path

from services.devkit.broker_common import HOST, BrokerError, free_port, port_bindable

PROPS_FILE = "server.properties"
LOG4J_FILE = "log4j2.properties"
BROKER_LOG = "broker.log"

_LOG4J2 = """\
# Written by onevoice (services/devkit/broker_config.py): broker logs go to {log}
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


def default_data_dir(port: int = 9092) -> Path:
    """Where a broker on ``port`` keeps its data when no data dir is given."""
    return (Path.cwd() / ".onevoice" / f"kafka-{port}").resolve()


def resolve_data_dir(data_dir: Path | str | None, port: int) -> Path:
    return Path(data_dir).expanduser().resolve() if data_dir is not None else default_data_dir(port)


def read_props(path: Path) -> dict[str, str]:
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


def _random_cluster_id() -> str:
    """Same shape as ``kafka.tools.StorageTool random-uuid`` (Kafka's Uuid.randomUuid), without a JVM start."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def write_config(data_dir: Path, port: int, secure: bool = False) -> Path:
    props_path = data_dir / PROPS_FILE
    old = read_props(props_path)
    controller_port = None
    with contextlib.suppress(KeyError, ValueError):
        controller_port = int(old["controller.quorum.voters"].rsplit(":", 1)[1])
    if controller_port is None or controller_port == port or not port_bindable(controller_port):
        controller_port = free_port()
        while controller_port == port:
            controller_port = free_port()
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
    body = "# Written by onevoice (services/devkit/broker_config.py) on each start.\n"
    body += "".join(f"{k}={v}\n" for k, v in props.items())
    fd = os.open(props_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # a secure broker's holds passwords
    with os.fdopen(fd, "w") as fh:
        fh.write(body)
    os.chmod(props_path, 0o600)
    (data_dir / LOG4J_FILE).write_text(_LOG4J2.format(log=data_dir / BROKER_LOG))
    return props_path


def format_storage(java: str, libs: Path, data_dir: Path, props_path: Path, extra: list[str] = ()) -> None:
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

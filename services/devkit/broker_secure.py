"""`onevoice broker start --secure`: the local broker with SASL_SSL, SCRAM users and ACLs.

What a real cluster needs, on one machine: clients reach the broker only over TLS (a CA and a
broker certificate made here with openssl/keytool; clients need just the CA's PEM) and log in
with SCRAM-SHA-512; the controller listener uses SASL too (a PLAINTEXT controller with an
authorizer never starts: PLATFORM-NOTES). KRaft's StandardAuthorizer denies whatever no ACL
allows. The principals and what each may do are `PRINCIPALS` below (README "Kafka security"
says the same for a real cluster):

* ``admin``    super user (creates the ACLs; the scenario runner's and tests' own clients)
* ``onevoice`` the service: reads the input topics and the outputs (the relay reads its outputs
  back after a takeover), writes the outputs, reads the configs of the outputs (their size
  limit), creates topics, and uses consumer groups whose id starts with ``onevoice``
* ``inbox``    the only one that may write ``kam.decisions``
* ``erp``, ``crm``, ``finance``  each writes only its own input topics

Passwords are made once per data directory (``secure/credentials.json``, mode 0600) and the
users exist from the first start (``StorageTool format --add-scram``); ACLs are created once,
after the first start, with Kafka's AclCommand (``org.apache.kafka:kafka-tools``, one jar fetched
with Maven: services/devkit/kafka_jars.py); both survive restarts.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from schemas.registry import INPUT_TOPICS, OUTPUT_TOPICS, RELAYED_TOPICS
from services.devkit.broker_common import BrokerError

MECHANISM = "SCRAM-SHA-512"
SECURE_DIR = "secure"
CREDENTIALS = "credentials.json"
ACLS_MARKER = "acls.applied"


@dataclass(frozen=True)
class Grant:
    """ACLs of one AclCommand call: `operations` on `resources` ("topic"/"group" names, or "cluster")."""

    kind: str  # topic | group | cluster
    names: tuple[str, ...]
    operations: tuple[str, ...]
    prefixed: bool = False


#: principal -> what it may do (besides `admin`, a super user, who needs no ACL)
PRINCIPALS: dict[str, tuple[Grant, ...]] = {
    "admin": (),
    "onevoice": (
        Grant("topic", (*INPUT_TOPICS, *OUTPUT_TOPICS), ("Read", "Describe")),
        Grant("topic", OUTPUT_TOPICS, ("Write", "DescribeConfigs")),
        Grant("cluster", (), ("Create",)),
        Grant("group", ("onevoice",), ("Read",), prefixed=True),
    ),
    "inbox": (Grant("topic", ("kam.decisions",), ("Write", "Describe")),),
    "erp": (Grant("topic", ("erp.agreements", "erp.promotions", "erp.stock"), ("Write", "Describe")),),
    "crm": (Grant("topic", ("crm.accounts",), ("Write", "Describe")),),
    "finance": (Grant("topic", ("finance.dunning",), ("Write", "Describe")),),
}
assert set(RELAYED_TOPICS) <= set(OUTPUT_TOPICS)


def secure_dir(data_dir: Path) -> Path:
    return data_dir / SECURE_DIR


def is_secure(data_dir: Path) -> bool:
    return (secure_dir(data_dir) / CREDENTIALS).exists()


def credentials(data_dir: Path) -> dict[str, str]:
    """principal -> password, made once per data directory (0600)."""
    path = secure_dir(data_dir) / CREDENTIALS
    if path.exists():
        stored = json.loads(path.read_text())
        if set(stored["passwords"]) >= set(PRINCIPALS):
            return stored["passwords"]
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    passwords = {name: secrets.token_urlsafe(24) for name in PRINCIPALS}
    passwords["keystore"] = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"passwords": passwords}, fh)
    return passwords


# --------------------------------------------------------------------------- certificates


def _run(cmd: list[str], what: str, cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise BrokerError(f"{what} failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-800:]}")


def ca_file(data_dir: Path) -> Path:
    return secure_dir(data_dir) / "ca.pem"


def ensure_certificates(data_dir: Path, store_password: str) -> None:
    """A CA, a broker certificate for 127.0.0.1/localhost signed by it, as PKCS12 key and trust stores."""
    d = secure_dir(data_dir)
    if (d / "broker.p12").exists() and (d / "truststore.p12").exists() and ca_file(data_dir).exists():
        return
    openssl, keytool = shutil.which("openssl"), shutil.which("keytool")
    if not openssl or not keytool:
        raise BrokerError("--secure needs `openssl` and `keytool` (Java) on PATH to make the certificates.")
    d.mkdir(parents=True, exist_ok=True)
    (d / "broker.ext").write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                                  "extendedKeyUsage=serverAuth,clientAuth\n"
                                  "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
          "-days", "3650", "-subj", "/CN=onevoice local CA",
          "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
         "openssl (CA)", d)
    _run([openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
          "-subj", "/CN=localhost"], "openssl (broker key)", d)
    _run([openssl, "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
          "-out", "broker.pem", "-days", "3650", "-extfile", "broker.ext"], "openssl (broker certificate)", d)
    _run([openssl, "pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", "ca.pem",
          "-name", "broker", "-out", "broker.p12", "-passout", f"pass:{store_password}"], "openssl pkcs12", d)
    (d / "truststore.p12").unlink(missing_ok=True)
    _run([keytool, "-importcert", "-noprompt", "-alias", "onevoice-ca", "-file", "ca.pem", "-keystore",
          "truststore.p12", "-storetype", "PKCS12", "-storepass", store_password], "keytool", d)
    for name in ("ca.key", "broker.key", "broker.p12", "truststore.p12"):
        os.chmod(d / name, 0o600)


# --------------------------------------------------------------------------- broker properties


def _jaas(user: str, password: str) -> str:
    return f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{user}" password="{password}";'


def broker_properties(data_dir: Path, host: str, port: int, controller_port: int) -> dict[str, str]:
    """The listener, SASL, TLS and authorizer lines of a secure broker's server.properties."""
    passwords = credentials(data_dir)
    d, store = secure_dir(data_dir), passwords["keystore"]
    jaas = _jaas("admin", passwords["admin"])
    return {
        "listeners": f"CLIENT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"CLIENT://{host}:{port}",
        "listener.security.protocol.map": "CLIENT:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
        "inter.broker.listener.name": "CLIENT",
        "controller.listener.names": "CONTROLLER",
        "sasl.enabled.mechanisms": MECHANISM,
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        "sasl.mechanism.controller.protocol": MECHANISM,
        f"listener.name.client.{MECHANISM.lower()}.sasl.jaas.config": jaas,
        f"listener.name.controller.{MECHANISM.lower()}.sasl.jaas.config": jaas,
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(d / "broker.p12"),
        "ssl.keystore.password": store,
        "ssl.key.password": store,
        "ssl.truststore.type": "PKCS12",
        "ssl.truststore.location": str(d / "truststore.p12"),
        "ssl.truststore.password": store,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:admin",
        "allow.everyone.if.no.acl.found": "false",
    }


def scram_arguments(data_dir: Path) -> list[str]:
    """`StorageTool format` arguments that create every principal's SCRAM credentials."""
    passwords = credentials(data_dir)
    args = []
    for name in PRINCIPALS:
        args += ["--add-scram", f"{MECHANISM}=[name={name},password={passwords[name]}]"]
    return args


# --------------------------------------------------------------------------- client settings


def client_environment(data_dir: Path, bootstrap: str, principal: str) -> dict[str, str]:
    """The ONEVOICE_KAFKA_* variables a client of `principal` needs for this broker."""
    return {
        "ONEVOICE_KAFKA_BOOTSTRAP": bootstrap,
        "ONEVOICE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "ONEVOICE_KAFKA_SASL_MECHANISM": MECHANISM,
        "ONEVOICE_KAFKA_SASL_USERNAME": principal,
        "ONEVOICE_KAFKA_SASL_PASSWORD": credentials(data_dir)[principal],
        "ONEVOICE_KAFKA_SSL_CAFILE": str(ca_file(data_dir)),
    }


def aiokafka_options(data_dir: Path, principal: str) -> dict:
    from aiokafka.helpers import create_ssl_context

    return {"security_protocol": "SASL_SSL", "ssl_context": create_ssl_context(cafile=str(ca_file(data_dir))),
            "sasl_mechanism": MECHANISM, "sasl_plain_username": principal,
            "sasl_plain_password": credentials(data_dir)[principal]}


# --------------------------------------------------------------------------- ACLs


def acl_commands(bootstrap: str, config: Path) -> list[list[str]]:
    """One AclCommand argument list per grant."""
    calls = []
    for principal, grants in PRINCIPALS.items():
        for grant in grants:
            args = ["--bootstrap-server", bootstrap, "--command-config", str(config), "--add",
                    "--allow-principal", f"User:{principal}"]
            for operation in grant.operations:
                args += ["--operation", operation]
            if grant.kind == "cluster":
                args.append("--cluster")
            for name in grant.names:
                args += [f"--{grant.kind}", name]
            if grant.prefixed:
                args += ["--resource-pattern-type", "prefixed"]
            calls.append(args)
    return calls


def _spec_digest() -> str:
    return hashlib.sha256(repr(sorted(PRINCIPALS.items())).encode()).hexdigest()[:16]


def ensure_acls(java: str, libs: Path, tools: Path, data_dir: Path, bootstrap: str) -> None:
    """Create the ACLs of `PRINCIPALS` once per data directory (again when the table changes)."""
    marker = secure_dir(data_dir) / ACLS_MARKER
    if marker.exists() and marker.read_text().strip() == _spec_digest():
        return
    config = secure_dir(data_dir) / "admin.properties"
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"security.protocol=SASL_SSL\nsasl.mechanism={MECHANISM}\n"
                 f"sasl.jaas.config={_jaas('admin', credentials(data_dir)['admin'])}\n"
                 f"ssl.truststore.type=PEM\nssl.truststore.location={ca_file(data_dir)}\n")
    base = [java, "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
            f"-Dlog4j2.configurationFile={data_dir / 'log4j2.properties'}",
            "-cp", f"{libs}/*:{tools}/*", "org.apache.kafka.tools.AclCommand"]

    def run(args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(base + args, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)

    # Each call is a JVM start (~3 s): a few at a time.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, acl_commands(bootstrap, config)))
    failed = [r for r in results if r.returncode != 0]
    if failed:
        raise BrokerError(f"creating ACLs failed: {(failed[0].stderr or failed[0].stdout).strip()[-800:]}")
    marker.write_text(_spec_digest() + "\n")

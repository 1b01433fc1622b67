"""One place that builds every Kafka client of onevoice, with the cluster's security settings.

The service's consumer and producer, the outbox relay, the topic admin, `onevoice replay`, the
ops reporter and the scenario runner all ask here, so that SASL/TLS set once in the environment
(`ONEVOICE_KAFKA_SECURITY_PROTOCOL`, `…_SASL_*`, `…_SSL_*`, see services/config.py) applies to all
of them. A caller passes either a `Settings` or a bare bootstrap string (a plaintext cluster,
as in tests against the local broker).

    producer(target, **options) -> AIOKafkaProducer
    consumer(target, *topics, **options) -> AIOKafkaConsumer
    admin(target, **options) -> AIOKafkaAdminClient
    client_options(target) -> dict      # bootstrap_servers + the security keyword arguments
    security_options(settings) -> dict  # security_protocol, ssl_context, sasl_* for aiokafka
    faststream_security(settings)       # the same for a FastStream KafkaBroker(security=...)
"""

from __future__ import annotations

import functools
import ssl
from pathlib import Path
from typing import Union

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

from services.config import Settings

__all__ = ["KafkaTarget", "admin", "client_options", "consumer", "faststream_security", "producer",
           "security_options", "bootstrap_of"]

#: A whole configuration, or just a bootstrap address of a plaintext cluster.
KafkaTarget = Union[Settings, str]


def bootstrap_of(target: KafkaTarget) -> str:
    return target if isinstance(target, str) else target.kafka_bootstrap


@functools.lru_cache(maxsize=8)
def _ssl_context(cafile: Path | None, certfile: Path | None, keyfile: Path | None) -> ssl.SSLContext:
    """One TLS context per set of files (reading and parsing the CA for every client cost a few ms each)."""
    return create_ssl_context(cafile=str(cafile) if cafile else None, certfile=str(certfile) if certfile else None,
                              keyfile=str(keyfile) if keyfile else None)


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """Verifies the broker against ONEVOICE_KAFKA_SSL_CAFILE (else the system CAs), host name included."""
    return _ssl_context(settings.kafka_ssl_cafile, settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)


def security_options(settings: Settings) -> dict:
    """aiokafka's keyword arguments for the configured protocol (empty for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    options: dict = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl_context(settings)
    if protocol.startswith("SASL_"):
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                       sasl_plain_username=settings.kafka_sasl_username,
                       sasl_plain_password=settings.kafka_sasl_password.get_secret_value())
    return options


def client_options(target: KafkaTarget) -> dict:
    if isinstance(target, str):
        return {"bootstrap_servers": target}
    return {"bootstrap_servers": target.kafka_bootstrap, **security_options(target)}


def producer(target: KafkaTarget, **options) -> AIOKafkaProducer:
    return AIOKafkaProducer(**client_options(target), **options)


def consumer(target: KafkaTarget, *topics: str, **options) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(*topics, **client_options(target), **options)


def admin(target: KafkaTarget, **options) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**client_options(target), **options)


def faststream_security(settings: Settings):
    """The configured security as a FastStream `security=` object (None for PLAINTEXT)."""
    from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

    protocol = settings.kafka_security_protocol
    context = ssl_context(settings) if protocol in ("SSL", "SASL_SSL") else None
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return BaseSecurity(ssl_context=context, use_ssl=True)
    kind = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}
    return kind[settings.kafka_sasl_mechanism](username=settings.kafka_sasl_username,
                                               password=settings.kafka_sasl_password.get_secret_value(),
                                               ssl_context=context, use_ssl=protocol == "SASL_SSL")

"""Settings read from the environment (and a `.env` file), as CONTRACT §1 names them."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of a running onevoice; defaults are the contract's."""

    model_config = SettingsConfigDict(env_prefix="ONEVOICE_", env_file=".env", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    database_url: str = "sqlite:///./onevoice.db"
    group_id: str = "onevoice"
    partitions: int = Field(6, ge=1)
    decision_window_s: float = Field(172800, ge=0)
    fallback_assignee: str = "kam-desk"
    # Beyond the contract: operational tuning, all optional.
    ops_interval_s: float = Field(10.0, gt=0)
    metrics_port: int = Field(0, ge=0, le=65535, description="port of /metrics, /healthz and /readyz; 0: off")
    metrics_host: str = Field("127.0.0.1", description="address the metrics and health endpoints listen on "
                              "(0.0.0.0 to reach them from other hosts, as in a container)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = Field("text", description="json: one JSON object per line, stable keys")
    replication_factor: int = Field(1, ge=1, description="replication factor of the topics onevoice creates")
    stall_after_s: float = Field(60.0, gt=0, description="/readyz turns unready when input waits this long "
                                 "while no batch is applied")
    max_batch: int = Field(2000, ge=1)
    timer_interval_s: float = Field(0.5, gt=0)
    session_timeout_ms: int = Field(10000, ge=1000, description="how soon a crashed member leaves the group "
                                    "(the broker's group.min.session.timeout.ms, 6000 by default, is the floor)")
    relay_lease_s: float = Field(10.0, gt=0, description="how soon another process takes over a crashed relay")
    startup_wait_s: float = Field(120.0, ge=0, description="how long `onevoice run` waits for the database and "
                                  "the broker at start before giving up")
    # Kafka security (services/kafka_clients.py builds every client from these).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(None, description="CA certificate(s), PEM, that signed the broker's")
    kafka_ssl_certfile: Path | None = Field(None, description="client certificate, PEM (mutual TLS)")
    kafka_ssl_keyfile: Path | None = Field(None, description="client private key, PEM (mutual TLS)")
    # The KAM inbox (`onevoice web`, services/web).
    web_trusted_header: str | None = Field(None, description="header an SSO proxy sets to the signed-in person id; "
                                           "off when unset (only set it behind a proxy that strips it from clients)")
    web_admins: str = Field("", description="comma-separated person ids that are admins when signed in by the "
                                            "trusted header (token holders are admins by their token)")
    web_session_hours: float = Field(12.0, gt=0, description="how long a browser stays signed in")
    web_sign_in_limit: int = Field(10, ge=1, description="failed sign-ins per client within the window before 429")
    web_sign_in_window_s: float = Field(300.0, gt=0)
    web_secure_cookies: bool = Field(False, description="mark cookies Secure even when the app sees plain HTTP "
                                                        "(TLS ends at a proxy); HTTPS requests always get Secure")
    web_decision_source: str = Field("onevoice/web", description="CloudEvents source of the decisions it publishes")
    # Notifications (`onevoice notify`, services/notify): e-mail, chat webhooks, reminders, the daily digest.
    smtp_url: str = Field("smtp://127.0.0.1:25", description="smtp://user:pass@host:587?starttls=true, or "
                          "smtps://… for implicit TLS; `timeout=` seconds also accepted")
    smtp_from: str = Field("onevoice <onevoice@localhost>", description="From: of every notification e-mail")
    web_base_url: str = Field("http://127.0.0.1:8000", description="links point to {web_base_url}/alerts/{alert_id}")
    notify_group_id: str = Field("onevoice-notify", description="consumer group of the notify processes")
    notify_language: str = Field("en", pattern="^(en|de)$", description="language for people without a preference")
    notify_digest_hour: int = Field(7, ge=0, le=23, description="local hour of the daily digest")
    notify_time_zone: str = Field("Europe/Berlin", description="time zone of the digest hour")
    notify_max_attempts: int = Field(12, ge=1, description="failed sends before a notification is recorded failed")
    notify_retry_base_s: float = Field(2.0, gt=0, description="first retry delay; doubles per attempt")
    notify_retry_max_s: float = Field(300.0, gt=0, description="longest retry delay")
    notify_lease_s: float = Field(60.0, gt=0, description="how long a claimed notification is a process's own; "
                                  "after that (a crash) another process sends it")
    notify_workers: int = Field(2, ge=1, description="concurrent senders (one SMTP connection each) per process")
    notify_webhooks: dict[str, dict[str, str]] = Field(
        default_factory=dict, description='chat channels by key account id, "*" for the default channel: '
        '{"ACME": {"kind": "teams|slack", "url": "https://…"}}')
    notify_alerts_topic: str = "kam.alerts"
    notify_notices_topic: str = "kam.notices"
    notify_metrics_port: int = Field(0, ge=0, description="Prometheus /metrics port of `onevoice notify`; 0: off")

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _case_insensitive(cls, value, info):
        """`info`, `Json`: the log settings are words, not case-sensitive codes."""
        if not isinstance(value, str):
            return value
        return value.strip().upper() if info.field_name == "log_level" else value.strip().lower()

    def __init__(self, **values):
        """As pydantic-settings reads them, but an unknown ONEVOICE_* variable is an error that names it
        (a misspelt ONEVOICE_KAFKA_SASL_PASWORD must not silently mean "no password"), and a value that
        does not validate is reported without echoing it (it may be a password or a URL holding one)."""
        unknown = unknown_variables(type(self))
        if unknown:
            raise SettingsError(f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                                f"(see the Configuration section of README.md for the ONEVOICE_* variables)")
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError(describe_errors(exc)) from None

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        from sqlalchemy.engine import make_url

        from services.redact import mask_url

        try:
            backend = make_url(value).get_backend_name()
        except Exception:
            backend = None
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database URL {mask_url(value)}: use sqlite:///… or postgresql://…")
        return value

    @model_validator(mode="after")
    def _kafka_security_complete(self):
        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL_") and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(f"ONEVOICE_KAFKA_SECURITY_PROTOCOL={protocol} needs ONEVOICE_KAFKA_SASL_USERNAME "
                             "and ONEVOICE_KAFKA_SASL_PASSWORD")
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise ValueError("ONEVOICE_KAFKA_SSL_CERTFILE and ONEVOICE_KAFKA_SSL_KEYFILE go together")
        for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"ONEVOICE_{name.upper()}: no such file {path}")
        return self

    def secret_values(self) -> list[str]:
        """Every secret this configuration holds (passwords, tokens, passwords inside URLs), for the log filter."""
        import re

        found = []
        for name in type(self).model_fields:
            value = getattr(self, name, None)
            if isinstance(value, SecretStr):
                found.append(value.get_secret_value())
            elif isinstance(value, str):
                match = re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:([^@\s]+)@", value)
                if match:
                    found.append(match.group(1))
                    from urllib.parse import unquote

                    found.append(unquote(match.group(1)))
        return [s for s in dict.fromkeys(found) if s]

    def kafka_security(self) -> dict:
        """The Kafka security settings alone, to build another Settings for the same cluster and principal."""
        return {name: getattr(self, name) for name in type(self).model_fields
                if name.startswith(("kafka_security", "kafka_sasl", "kafka_ssl"))}


class SettingsError(ValueError):
    """The configuration cannot be used; the text names the variables and never quotes their values."""


#: ONEVOICE_* variables that are not settings of the service but of its tooling (tests, chaos runs,
#: the broker jar cache): known, so not an error.
TOOLING_VARIABLES = frozenset({"ONEVOICE_TEST_DATABASE_URL", "ONEVOICE_CACHE_DIR", "ONEVOICE_DEBUG"})
TOOLING_PREFIXES = ("ONEVOICE_TEST_", "ONEVOICE_CHAOS_", "ONEVOICE_BENCH_", "ONEVOICE_FAULTS_")


def unknown_variables(settings_class: type[BaseSettings] = None, environ=None, env_file: str | None = ".env") -> list[str]:
    """The ONEVOICE_* names in the environment (and the `.env` file) that are no setting and no tooling variable."""
    settings_class = settings_class or Settings
    environ = os.environ if environ is None else environ
    names = set(environ)
    if env_file and os.path.isfile(env_file):
        from dotenv import dotenv_values

        names |= set(dotenv_values(env_file))
    known = {f"ONEVOICE_{name.upper()}" for name in settings_class.model_fields}
    return sorted(n for n in names if n.upper().startswith("ONEVOICE_") and n.upper() not in known
                  and n.upper() not in TOOLING_VARIABLES and not n.upper().startswith(TOOLING_PREFIXES))


def describe_errors(exc: ValidationError) -> str:
    """A validation failure as `ONEVOICE_NAME: reason` lines, without the offending values."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "__root__")
        message = error.get("msg", "invalid").removeprefix("Value error, ")
        lines.append(f"ONEVOICE_{where.upper()}: {message}" if where else message)
    return "invalid configuration: " + "; ".join(lines)


@lru_cache
def get_settings() -> Settings:
    return Settings()

"""Settings read from the environment (and a `.env` file), as CONTRACT §1 names them."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator
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


@lru_cache
def get_settings() -> Settings:
    return Settings()

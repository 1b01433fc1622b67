"""Security settings without a broker: unknown variables, values never echoed, client options, log redaction."""

from __future__ import annotations

import logging
import ssl

import pytest

from services import kafka_clients
from services.config import Settings, SettingsError
from services.outages import Outages
from services.redact import SecretsFilter, mask_url


def test_an_unknown_onevoice_variable_is_an_error_that_names_it(monkeypatch):
    monkeypatch.setenv("ONEVOICE_KAFKA_SASL_PASWORD", "whatever")
    with pytest.raises(SettingsError, match="ONEVOICE_KAFKA_SASL_PASWORD"):
        Settings()
    monkeypatch.delenv("ONEVOICE_KAFKA_SASL_PASWORD")
    monkeypatch.setenv("ONEVOICE_TEST_DATABASE_URL", "postgresql://x@h/db")  # tooling: known
    monkeypatch.setenv("ONEVOICE_CACHE_DIR", "/tmp")
    assert Settings().kafka_security_protocol == "PLAINTEXT"


def test_invalid_values_are_named_never_quoted():
    with pytest.raises(SettingsError) as caught:
        Settings(database_url="mysql://kam:S3cret-pw@db/onevoice")
    assert "S3cret-pw" not in str(caught.value) and "kam:***@db" in str(caught.value)
    with pytest.raises(SettingsError) as caught:
        Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="u")
    assert "ONEVOICE_KAFKA_SASL_PASSWORD" in str(caught.value)
    with pytest.raises(SettingsError) as caught:
        Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="u", kafka_sasl_password="S3cret-pw",
                 partitions=0)
    assert "S3cret-pw" not in str(caught.value) and "ONEVOICE_PARTITIONS" in str(caught.value)


def test_client_options_carry_the_security_settings(tmp_path):
    import subprocess

    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "k"),
                    "-out", str(tmp_path / "ca.pem"), "-days", "1", "-subj", "/CN=t"], check=True, capture_output=True)
    settings = Settings(kafka_bootstrap="b:9093", kafka_security_protocol="SASL_SSL", kafka_sasl_username="onevoice",
                        kafka_sasl_password="pw-123", kafka_ssl_cafile=tmp_path / "ca.pem")
    options = kafka_clients.client_options(settings)
    assert options["bootstrap_servers"] == "b:9093" and options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512" and options["sasl_plain_password"] == "pw-123"
    assert isinstance(options["ssl_context"], ssl.SSLContext) and options["ssl_context"].check_hostname
    assert kafka_clients.client_options("h:1") == {"bootstrap_servers": "h:1"}
    assert "pw-123" not in repr(settings)
    security = kafka_clients.faststream_security(settings)
    assert security.username == "onevoice" and security.use_ssl


def test_the_log_filter_blanks_secrets_and_url_passwords():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "login %s failed at %s", ("hunter22", "postgresql://u:pw9@h/db"),
                               None)
    SecretsFilter(["hunter22"]).filter(record)
    assert record.getMessage() == "login *** failed at postgresql://u:***@h/db"
    assert mask_url("smtp://mailer:abc@h:25") == "smtp://mailer:***@h:25"


def test_an_outage_is_one_line_a_reminder_every_30_s_and_one_line_back():
    now = [0.0]
    records = []

    class Capture(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger("test.outages")
    logger.addHandler(Capture())
    logger.propagate = False
    outages = Outages(clock=lambda: now[0], logger=logger)
    for second in range(0, 70):  # a failure every second for 70 s
        now[0] = float(second)
        outages.failed("database", ConnectionError("refused"))
        outages.failed("database", "aiokafka-like repeat", from_library=True)
    now[0] = 70.0
    outages.recovered("database")
    outages.recovered("database")
    assert len(records) == 4, records  # first line, reminders at 30 s and 60 s, back
    assert records[0].startswith("database unavailable: ConnectionError: refused")
    assert records[-1] == "database is back after 70 s"

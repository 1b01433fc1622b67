"""JSON Schema files and the AsyncAPI document."""

from __future__ import annotations

import json
import warnings

import pytest

from schemas import EVENT_MODELS, INPUT_TOPICS, OUTPUT_TOPICS
from schemas.export import asyncapi_document, write_asyncapi, write_json_schemas

ALL_TOPICS = set(INPUT_TOPICS) | set(OUTPUT_TOPICS)


def test_eleven_topics():
    assert len(ALL_TOPICS) == 11
    assert set(OUTPUT_TOPICS) == {"kam.alerts", "kam.instructions", "kam.notices", "kam.dlq", "kam.ops"}


def test_write_json_schemas(tmp_path):
    paths = write_json_schemas(tmp_path / "out")
    names = {p.name for p in paths}
    assert {f"{t}.schema.json" for t in EVENT_MODELS} <= names
    assert {f"{t}.schema.json" for t in OUTPUT_TOPICS} <= names
    assert len(paths) == len(EVENT_MODELS) + len(OUTPUT_TOPICS)
    for path in paths:
        document = json.loads(path.read_text(encoding="utf-8"))
        assert document["$schema"].startswith("https://json-schema.org/")
        assert document["type"] == "object"


def test_event_schema_is_the_full_envelope_with_typed_data(tmp_path):
    write_json_schemas(tmp_path)
    document = json.loads((tmp_path / "price.agreed.schema.json").read_text(encoding="utf-8"))
    props = document["properties"]
    assert set(document["required"]) >= {"specversion", "id", "source", "type", "time", "data"}
    assert props["type"]["const"] == "price.agreed"
    assert props["specversion"]["const"] == "1.0"
    data = document["$defs"]["PriceAgreed"]
    assert data["properties"]["price"]["type"] == "string"
    assert data["properties"]["price"]["pattern"] == r"^[0-9]{1,15}(\.[0-9]{1,6})?$"
    assert data["properties"]["currency"]["pattern"] == "^[A-Z]{3}$"
    assert data["properties"]["version"]["type"] == "integer"
    assert data["properties"]["valid_from"]["format"] == "date"
    assert "allOf" in data  # scope/country conditional


def test_output_schema_fields(tmp_path):
    write_json_schemas(tmp_path)
    alerts = json.loads((tmp_path / "kam.alerts.schema.json").read_text(encoding="utf-8"))
    assert set(alerts["properties"]) == {
        "alert_id", "fingerprint", "rule", "severity", "status", "key_account_id", "account_id", "title",
        "detail", "evidence", "assignee", "recipients", "due_at", "caused_by", "created_at", "updated_at", "data",
    }  # fmt: skip
    ops = json.loads((tmp_path / "kam.ops.schema.json").read_text(encoding="utf-8"))
    assert set(ops["properties"]) == {
        "at", "processed", "duplicates", "stale", "dead_letters", "open_alerts", "escalations",
        "consumer_lag", "unknown_accounts", "instance", "outbox_pending", "undeliverable",
    }  # fmt: skip


@pytest.mark.parametrize("version", ["3.0.0", "2.6.0"])
def test_asyncapi_lists_all_topics(version):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. two payload schemas with the same name
        document = asyncapi_document(version)
    assert document["asyncapi"] == version
    channels = document["channels"]
    addresses = {c.get("address", name) for name, c in channels.items()}
    assert addresses == ALL_TOPICS
    json.dumps(document)  # plain JSON


def test_asyncapi_payloads_cover_every_event_type():
    document = asyncapi_document()
    schemas = document["components"]["schemas"]
    for model in EVENT_MODELS.values():
        assert model.__name__ in schemas
        assert f"{model.__name__}Event" in schemas
    for name in ["AlertMessage", "InstructionMessage", "DeadLetter", "OpsSnapshot"]:
        assert name in schemas
    operations = document["operations"]
    receive = {op["channel"]["$ref"].rsplit("/", 1)[-1] for op in operations.values() if op["action"] == "receive"}
    send = {op["channel"]["$ref"].rsplit("/", 1)[-1] for op in operations.values() if op["action"] == "send"}
    assert receive == set(INPUT_TOPICS)
    assert send == set(OUTPUT_TOPICS)


def test_write_asyncapi(tmp_path):
    path = write_asyncapi(tmp_path / "docs" / "asyncapi.json")
    assert json.loads(path.read_text(encoding="utf-8"))["asyncapi"] == "3.0.0"

"""The inbox API over a store the real processor filled (SQLite), decisions applied by that processor.

Kafka is left out here only; tests/web/test_end_to_end.py runs the same paths through a real broker,
`onevoice run` and PostgreSQL.
"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from services.web.app import create_app
from services.web.tokens import create_token, revoke_token
from tests.web.support import InProcessPipeline, event, scenario


@pytest.fixture
def pipeline(sqlite_url):
    pipe = InProcessPipeline(sqlite_url)
    pipe.replay(scenario("key-account-dunning"))
    yield pipe
    pipe.engine.dispose()


@pytest.fixture
def client(pipeline):
    app = create_app(pipeline.settings, engine=pipeline.engine, publisher=pipeline)
    with TestClient(app) as c:
        yield c


def bearer(pipeline, person: str, **kw) -> dict:
    return {"Authorization": f"Bearer {create_token(pipeline.engine, person, **kw)[1]}"}


def dunning_alert(client, headers, fingerprint="key_account_dunning:ACME:D-1") -> dict:
    items = client.get("/api/v1/alerts", headers=headers).json()["items"]
    return next(a for a in items if a["fingerprint"] == fingerprint)


def test_no_or_bad_token_is_401(client):
    assert client.get("/api/v1/alerts").status_code == 401
    response = client.get("/api/v1/me", headers={"Authorization": "Bearer ov_nope_nope"})
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"


def test_me_lists_key_accounts_and_roles(client, pipeline):
    me = client.get("/api/v1/me", headers=bearer(pipeline, "p-carla")).json()
    assert me == {"person_id": "p-carla", "name": "p-carla", "admin": False,
                  "key_accounts": [{"key_account_id": "ACME", "name": "ACME Group",
                                    "roles": [{"role": "local_kam", "country": "IT"}]}]}


def test_local_kam_sees_the_dunning_alert_with_its_facts(client, pipeline):
    headers = bearer(pipeline, "p-carla")
    alert = dunning_alert(client, headers)
    assert (alert["status"], alert["assignee"], alert["severity"]) == ("open", "p-carla", "high")
    detail = client.get(f"/api/v1/alerts/{alert['alert_id']}", headers=headers).json()
    assert detail["allowed_decisions"] == ["acknowledge", "resolve", "waive", "release", "proceed"]
    assert detail["evidence_facts"][0]["kind"] == "dunning"
    assert detail["evidence_facts"][0]["facts"]["amount"] == "48210.00"
    assert detail["instruction"]["action"] == "hold"
    assert [h["status"] for h in detail["history"]] == ["open"]
    assert detail["escalates_at"] == alert["due_at"]


def test_outsider_gets_404_and_finance_member_403(client, pipeline):
    alert = dunning_alert(client, bearer(pipeline, "p-carla"))
    outsider = bearer(pipeline, "p-stranger")
    assert client.get(f"/api/v1/alerts/{alert['alert_id']}", headers=outsider).status_code == 404
    assert client.get("/api/v1/alerts", headers=outsider).json() == {"items": [], "next_cursor": None}
    assert client.get("/api/v1/key-accounts/ACME", headers=outsider).status_code == 404
    assert client.post(f"/api/v1/alerts/{alert['alert_id']}/decisions", headers=outsider,
                       json={"decision": "release"}).status_code == 404
    finance = bearer(pipeline, "p-finn")
    detail = client.get(f"/api/v1/alerts/{alert['alert_id']}", headers=finance).json()
    assert detail["allowed_decisions"] == []
    refused = client.post(f"/api/v1/alerts/{alert['alert_id']}/decisions", headers=finance, json={"decision": "release"})
    assert refused.status_code == 403 and refused.json()["detail"]["code"] == "unauthorized_decision"
    admin = bearer(pipeline, "p-root", admin=True)
    assert client.get(f"/api/v1/alerts/{alert['alert_id']}", headers=admin).status_code == 200
    assert client.post(f"/api/v1/alerts/{alert['alert_id']}/decisions", headers=admin,
                       json={"decision": "release"}).status_code == 403  # seeing all is no right to decide


def test_release_is_applied_then_a_second_decision_is_409(client, pipeline):
    headers = bearer(pipeline, "p-carla")
    alert = dunning_alert(client, headers)
    sent = client.post(f"/api/v1/alerts/{alert['alert_id']}/decisions", headers=headers,
                       json={"decision": "release", "comment": "paid yesterday"})
    assert sent.status_code == 202 and sent.json()["status"] == "pending"
    outcome = client.get(f"/api/v1/decisions/{sent.json()['event_id']}", headers=headers).json()
    assert (outcome["status"], outcome["error"]) == ("applied", None)
    detail = client.get(f"/api/v1/alerts/{alert['alert_id']}", headers=headers).json()
    assert detail["status"] == "resolved" and detail["allowed_decisions"] == []
    assert detail["history"][-1] | {"at": None} == {
        "at": None, "status": "resolved", "assignee": "p-carla", "assignee_name": "p-carla", "decided_by": "p-carla",
        "decided_by_name": "p-carla", "caused_by": f"onevoice/web/{sent.json()['event_id']}",
        "comment": "paid yesterday"}
    assert detail["instruction"] | {"account_id": None} == {
        "kind": "dunning", "ref_id": "D-1", "action": "release", "account_id": None, "decided_by": "p-carla",
        "comment": "paid yesterday", "allocation": []}
    again = client.post(f"/api/v1/alerts/{alert['alert_id']}/decisions", headers=headers, json={"decision": "resolve"})
    assert again.status_code == 409
    # the decision is the decider's to follow, nobody else's
    assert client.get(f"/api/v1/decisions/{sent.json()['event_id']}",
                      headers=bearer(pipeline, "p-anna")).status_code == 404


def test_two_kams_at_once_one_applied_one_rejected(client, pipeline):
    carla, anna = bearer(pipeline, "p-carla"), bearer(pipeline, "p-anna")
    alert = dunning_alert(client, carla)
    pipeline.hold = True  # both decisions leave the inbox before the pipeline sees either
    first = client.post(f"/api/v1/alerts/{alert['alert_id']}/decisions", headers=carla, json={"decision": "release"})
    second = client.post(f"/api/v1/alerts/{alert['alert_id']}/decisions", headers=anna, json={"decision": "proceed"})
    assert first.status_code == second.status_code == 202
    assert client.get(f"/api/v1/decisions/{first.json()['event_id']}", headers=carla).json()["status"] == "pending"
    pipeline.release_held()
    outcomes = [client.get(f"/api/v1/decisions/{r.json()['event_id']}", headers=h).json()
                for r, h in ((first, carla), (second, anna))]
    assert sorted(o["status"] for o in outcomes) == ["applied", "rejected"]
    rejected = next(o for o in outcomes if o["status"] == "rejected")
    assert rejected["error"]["code"] == "invalid_decision"


def test_release_on_a_non_dunning_alert_is_refused(client, pipeline):
    contracts = scenario("parallel-global-contracts")
    pipeline.replay(dict(contracts, steps=contracts["steps"][:2]))  # not the withdrawal that resolves it
    admin = bearer(pipeline, "p-root", admin=True)
    items = client.get("/api/v1/alerts?rule=duplicate_global_contract", headers=admin).json()["items"]
    assert items, "the scenario raises a duplicate_global_contract alert"
    alert = items[0]
    team = client.get(f"/api/v1/key-accounts/{alert['key_account_id']}", headers=admin).json()["team"]
    kam = next(m["person_id"] for m in team if m["role"] == "global_kam")
    headers = bearer(pipeline, kam)
    detail = client.get(f"/api/v1/alerts/{alert['alert_id']}", headers=headers).json()
    assert "release" not in detail["allowed_decisions"] and "resolve" in detail["allowed_decisions"]
    assert len(detail["evidence_facts"]) == 2 and {e["kind"] for e in detail["evidence_facts"]} == {"agreement"}
    refused = client.post(f"/api/v1/alerts/{alert['alert_id']}/decisions", headers=headers, json={"decision": "release"})
    assert refused.status_code == 403 and refused.json()["detail"]["code"] == "invalid_decision"


def test_alerts_are_most_urgent_first_and_page_with_a_cursor(client, pipeline):
    for n in range(7):
        level_action = "reminder" if n % 2 else "collection"
        pipeline.feed([("finance.dunning", b"ACME-IT", json.dumps(event(f"dun-{n}", "dunning.triggered", {
            "dunning_id": f"DX-{n}", "account_id": "ACME-IT", "invoice_id": f"I-{n}", "level": 1, "amount": "10.00",
            "currency": "EUR", "due_date": "2027-02-01", "proposed_action": level_action})).encode())])
    headers = bearer(pipeline, "p-carla")
    everything = client.get("/api/v1/alerts?limit=200", headers=headers).json()["items"]
    seen, cursor = [], None
    while True:
        page = client.get("/api/v1/alerts", headers=headers, params={"limit": 3, "cursor": cursor}).json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [a["alert_id"] for a in seen] == [a["alert_id"] for a in everything]
    ranks = [{"critical": 0, "high": 1, "medium": 2, "low": 3}[a["severity"]] for a in seen]
    assert ranks == sorted(ranks) and len(seen) == 9  # D-1, D-2 and the 7 new ones
    assert {a["severity"] for a in client.get("/api/v1/alerts?severity=low", headers=headers).json()["items"]} == {"low"}
    mine = client.get("/api/v1/alerts?assignee=me", headers=headers).json()["items"]
    assert mine and {a["assignee"] for a in mine} == {"p-carla"}
    assert client.get("/api/v1/alerts?cursor=garbage", headers=headers).status_code == 422


def test_key_account_page_data(client, pipeline):
    detail = client.get("/api/v1/key-accounts/ACME", headers=bearer(pipeline, "p-tom")).json()
    assert [a["account_id"] for a in detail["hierarchy"]] == ["ACME", "ACME-IT", "ACME-US"]
    assert {(m["person_id"], m["role"]) for m in detail["team"]} >= {("p-anna", "global_kam"), ("p-finn", "finance")}
    assert {a["fingerprint"] for a in detail["open_alerts"]} == {"key_account_dunning:ACME:D-1",
                                                                 "key_account_dunning:ACME:D-2"}


def test_revoked_and_expired_tokens_stop_working(client, pipeline):
    token_id, token = create_token(pipeline.engine, "p-carla")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/me", headers=headers).status_code == 200
    assert revoke_token(pipeline.engine, token_id)
    assert client.get("/api/v1/me", headers=headers).status_code == 401
    _, expired = create_token(pipeline.engine, "p-carla", expires_days=-1)
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {expired}"}).status_code == 401


def test_failed_sign_ins_are_rate_limited(sqlite_url):
    pipe = InProcessPipeline(sqlite_url, web_sign_in_limit=3)
    app = create_app(pipe.settings, engine=pipe.engine, publisher=pipe)
    _, good = create_token(pipe.engine, "p-carla")
    with TestClient(app) as c:
        codes = [c.get("/api/v1/me", headers={"Authorization": f"Bearer ov_bad_{n}"}).status_code for n in range(4)]
        assert codes == [401, 401, 401, 429]
        locked = c.get("/api/v1/me", headers={"Authorization": f"Bearer {good}"})
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    pipe.engine.dispose()


def test_openapi_document_is_served(client):
    spec = client.get("/api/v1/openapi.json").json()
    assert {"/api/v1/alerts", "/api/v1/alerts/{alert_id}", "/api/v1/alerts/{alert_id}/decisions",
            "/api/v1/decisions/{event_id}", "/api/v1/key-accounts/{key_account_id}", "/api/v1/me"} <= set(spec["paths"])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/api/v1/alerts/{alert_id}/decisions" in docs.text
    assert "cdn" not in docs.text.lower()

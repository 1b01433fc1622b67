"""The inbox end to end: real Kafka, PostgreSQL, `onevoice run` and `onevoice web` (tests/web/conftest.py).

The local KAM signs in with a token, sees the held dunning, releases it through the API, and the
resolved alert and the `release` instruction appear on Kafka; outsiders get 404, a finance member 403;
a closed alert refuses decisions; two KAMs deciding at the same instant get one applied, one rejected.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def wait_outcome(stack, event_id: str, headers: dict, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        outcome = httpx.get(f"{stack.base_url}/api/v1/decisions/{event_id}", headers=headers, timeout=10).json()
        if outcome["status"] != "pending":
            return outcome
        time.sleep(0.3)
    raise AssertionError(f"decision {event_id} still pending after {timeout_s}s")


def wait_on_kafka(stack, found, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = found(stack.outputs())
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError("expected messages did not appear on Kafka")


def alert_by_fingerprint(stack, headers: dict, fingerprint: str) -> dict:
    items = httpx.get(f"{stack.base_url}/api/v1/alerts", params={"limit": 200}, headers=headers, timeout=10).json()["items"]
    return next(a for a in items if a["fingerprint"] == fingerprint)


def test_local_kam_releases_the_held_dunning(live_stack):
    carla = live_stack.headers("p-carla")
    me = httpx.get(f"{live_stack.base_url}/api/v1/me", headers=carla, timeout=10).json()
    assert me["name"] == "Carla Rossi" and me["key_accounts"][0]["key_account_id"] == "ACME"
    inbox = httpx.get(f"{live_stack.base_url}/api/v1/alerts", params={"involving": "me", "status": "open"},
                      headers=carla, timeout=10).json()["items"]
    alert = next(a for a in inbox if a["fingerprint"] == "key_account_dunning:ACME:D-1")
    assert (alert["status"], alert["assignee"], alert["severity"]) == ("open", "p-carla", "high")
    detail = httpx.get(f"{live_stack.base_url}/api/v1/alerts/{alert['alert_id']}", headers=carla, timeout=10).json()
    assert "release" in detail["allowed_decisions"] and detail["instruction"]["action"] == "hold"

    sent = httpx.post(f"{live_stack.base_url}/api/v1/alerts/{alert['alert_id']}/decisions", headers=carla,
                      json={"decision": "release", "comment": "customer paid"}, timeout=30)
    assert sent.status_code == 202 and sent.json()["status"] == "pending"
    outcome = wait_outcome(live_stack, sent.json()["event_id"], carla)
    assert (outcome["status"], outcome["error"]) == ("applied", None)

    def resolved_and_released(out):
        alerts = [m for m in out["kam.alerts"] if m["alert_id"] == alert["alert_id"] and m["status"] == "resolved"]
        released = [m for m in out["kam.instructions"] if m["alert_id"] == alert["alert_id"] and m["action"] == "release"]
        return (alerts, released) if alerts and released else None

    alerts, released = wait_on_kafka(live_stack, resolved_and_released)
    assert alerts[0]["caused_by"] == f"onevoice/web/{sent.json()['event_id']}"
    assert (released[0]["ref_id"], released[0]["decided_by"], released[0]["kind"]) == ("D-1", "p-carla", "dunning")

    after = httpx.get(f"{live_stack.base_url}/api/v1/alerts/{alert['alert_id']}", headers=carla, timeout=10).json()
    assert after["status"] == "resolved" and after["instruction"]["action"] == "release"
    assert after["history"][-1]["decided_by_name"] == "Carla Rossi"
    assert after["history"][-1]["comment"] == "customer paid"

    # closed now: the inbox knows it and refuses at once
    again = httpx.post(f"{live_stack.base_url}/api/v1/alerts/{alert['alert_id']}/decisions", headers=carla,
                       json={"decision": "proceed"}, timeout=30)
    assert again.status_code == 409 and again.json()["detail"]["code"] == "invalid_decision"


def test_outsider_gets_404_and_finance_member_403(live_stack):
    live_stack.dunning("D-FIN")
    anna = live_stack.headers("p-anna")
    alert = alert_by_fingerprint(live_stack, anna, "key_account_dunning:ACME:D-FIN")
    url = f"{live_stack.base_url}/api/v1/alerts/{alert['alert_id']}"

    outsider = live_stack.headers("p-outsider")
    assert httpx.get(url, headers=outsider, timeout=10).status_code == 404
    assert httpx.post(f"{url}/decisions", headers=outsider, json={"decision": "release"}, timeout=10).status_code == 404
    assert httpx.get(f"{live_stack.base_url}/api/v1/key-accounts/ACME", headers=outsider, timeout=10).status_code == 404

    finance = live_stack.headers("p-finn")
    seen = httpx.get(url, headers=finance, timeout=10)
    assert seen.status_code == 200 and seen.json()["allowed_decisions"] == []
    refused = httpx.post(f"{url}/decisions", headers=finance, json={"decision": "release"}, timeout=10)
    assert refused.status_code == 403 and refused.json()["detail"]["code"] == "unauthorized_decision"

    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer ov_x_wrong"}, timeout=10).status_code == 401


def test_two_kams_deciding_at_the_same_instant(live_stack):
    live_stack.dunning("D-RACE")
    carla, anna = live_stack.headers("p-carla"), live_stack.headers("p-anna")
    alert = alert_by_fingerprint(live_stack, carla, "key_account_dunning:ACME:D-RACE")
    url = f"{live_stack.base_url}/api/v1/alerts/{alert['alert_id']}/decisions"

    async def both():
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(client.post(url, headers=carla, json={"decision": "release"}),
                                        client.post(url, headers=anna, json={"decision": "proceed"}))

    first, second = asyncio.run(both())
    sent = [(r, h) for r, h in ((first, carla), (second, anna)) if r.status_code == 202]
    refused_at_once = [r for r in (first, second) if r.status_code == 409]
    assert len(sent) + len(refused_at_once) == 2 and sent, (first.text, second.text)
    outcomes = [wait_outcome(live_stack, r.json()["event_id"], h) for r, h in sent]
    assert sorted(o["status"] for o in outcomes) == (["applied", "rejected"] if len(sent) == 2 else ["applied"])
    assert all(o["error"]["code"] == "invalid_decision" for o in outcomes if o["status"] == "rejected")

    def one_instruction(out):
        return [m for m in out["kam.instructions"] if m["alert_id"] == alert["alert_id"] and m["action"] != "hold"]

    instructions = wait_on_kafka(live_stack, one_instruction)
    time.sleep(2)  # a second instruction, if the pipeline wrongly applied both, would have arrived by now
    assert len(one_instruction(live_stack.outputs())) == 1 == len(instructions)


def test_readiness_sees_store_and_broker(live_stack):
    ready = httpx.get(f"{live_stack.base_url}/readyz", timeout=20)
    assert ready.status_code == 200 and ready.json()["checks"] == {"store": True, "broker": True}

"""Worked scenarios (shared/scenarios format): load them, turn their steps into messages, and
summarise what the service published so it can be compared with the scenario's `expect`.

Used by the end-to-end tests, the in-process scenario tests and `onevoice demo`.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from importlib import resources
from pathlib import Path

BUNDLED = "services.demo_scenarios"


def bundled_scenarios() -> list[dict]:
    """The example scenarios shipped inside the package, sorted by name."""
    files = sorted(p for p in resources.files(BUNDLED).iterdir() if p.name.endswith(".json"))
    return [json.loads(p.read_text()) for p in files]


def load_scenario(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def message_bytes(entry: dict) -> tuple[str, bytes | None, bytes]:
    """(topic, key, value) of one `publish` entry, raw text sent as is."""
    key = entry.get("key")
    value = entry["raw"].encode() if "raw" in entry else json.dumps(entry["value"]).encode()
    return entry["topic"], key.encode() if key is not None else None, value


def decision_event(scenario: str, index: int, alert_id: str, decide: dict) -> dict:
    return {"specversion": "1.0", "id": f"{scenario}-decision-{index}", "source": "kam/inbox",
            "type": "decision.made", "time": "2027-01-01T12:00:00Z",
            "data": {"alert_id": alert_id, "decision": decide["decision"], "decided_by": decide["decided_by"],
                     "comment": None}}


def summarise(alerts: list[dict], instructions: list[dict], dead_letters: list[dict],
              notices: list[dict] | None = None) -> dict:
    """The outputs in the shape of a scenario's `expect` (alerts by fingerprint, instructions by ref_id,
    notices by kind, key account and subject; a notice sent twice is listed twice)."""
    by_fingerprint: dict[str, list[dict]] = defaultdict(list)
    for alert in alerts:
        by_fingerprint[alert["fingerprint"]].append(alert)
    summary_alerts = []
    for fingerprint, messages in sorted(by_fingerprint.items()):
        first = messages[0]
        summary_alerts.append({"fingerprint": fingerprint, "rule": first["rule"], "severity": first["severity"],
                               "key_account_id": first["key_account_id"], "evidence": first["evidence"],
                               "statuses": [m["status"] for m in messages],
                               "assignees": [m["assignee"] for m in messages]})
    by_ref: dict[str, list[dict]] = defaultdict(list)
    for instruction in instructions:
        action = {"action": instruction["action"]}
        if instruction["action"] == "allocate":
            action["allocation"] = [[line["order_id"], line["qty"]] for line in instruction["allocation"]]
        by_ref[instruction["ref_id"]].append(action)
    return {"alerts": summary_alerts,
            "instructions": [{"ref_id": ref, "actions": actions} for ref, actions in sorted(by_ref.items())],
            "dlq": dict(sorted(Counter(d["error"]["code"] for d in dead_letters).items())),
            "notices": _sorted_notices({"kind": n["kind"], "key_account_id": n["key_account_id"], "about": n["about"],
                                        "recipients": n["recipients"]} for n in notices or [])}


def normalised_expectation(scenario: dict) -> dict:
    expect = scenario["expect"]
    return {"alerts": sorted(expect["alerts"], key=lambda a: a["fingerprint"]),
            "instructions": sorted(expect["instructions"], key=lambda i: i["ref_id"]),
            "dlq": dict(sorted(expect["dlq"].items())),
            "notices": _sorted_notices(expect.get("notices", []))}


def _sorted_notices(notices) -> list[dict]:
    return sorted(notices, key=lambda n: (n["kind"], n["key_account_id"], n["about"], n["recipients"]))

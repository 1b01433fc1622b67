"""The messages onevoice publishes (CONTRACT §6), built from store rows: ids, shapes, topics.

Every output id is derived from what caused it (a name-based UUID), so a retried or
re-processed batch produces the same ids, whichever process sends them.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from pydantic_core import from_json  # our own JSON columns: the faster parser reads them exactly

from schemas.outputs import OUTPUT_VALUE_LIMIT, dead_letter_value
from schemas.registry import ALERTS_TOPIC, DLQ_TOPIC, INSTRUCTIONS_TOPIC, NOTICES_TOPIC

__all__ = ["ALERTS_TOPIC", "DLQ_TOPIC", "INSTRUCTIONS_TOPIC", "NOTICES_TOPIC", "ALERT_NAMESPACE", "output_id",
           "alert_message", "instruction_message", "notice_message", "dead_letter_value", "cut_text",
           "fit_output", "OUTPUT_VALUE_LIMIT"]

ALERT_NAMESPACE = uuid.UUID("6f1c1a52-6a3e-4f4e-9a51-0c0ffee0a1e7")
_NAMESPACE_BYTES = ALERT_NAMESPACE.bytes
CUT_MARKER = " …[cut]"


def output_id(name: str) -> str:
    """`str(uuid.uuid5(ALERT_NAMESPACE, name))`, without building a UUID object (a third of the cost)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def alert_message(row: dict, *, evidence: list | None = None, recipients: list | None = None,
                  data: dict | None = None) -> dict:
    """The kam.alerts message of CONTRACT §6 for an alert row (its JSON columns given parsed, if at hand)."""
    return {
        "alert_id": row["alert_id"], "fingerprint": row["fingerprint"], "rule": row["rule"],
        "severity": row["severity"], "status": row["status"], "key_account_id": row["key_account_id"],
        "account_id": row["account_id"], "title": row["title"], "detail": row["detail"],
        "evidence": evidence if evidence is not None else from_json(row["evidence"]), "assignee": row["assignee"],
        "recipients": recipients if recipients is not None else from_json(row["recipients"]),
        "due_at": row["due_at"], "caused_by": row["caused_by"], "created_at": row["created_at"],
        "updated_at": row["updated_at"], "data": data if data is not None else from_json(row["data"]),
    }


def instruction_message(*, kind: str, ref_id: str, action: str, account_id: str | None,
                        key_account_id: str | None, reason: str, caused_by: str, created_at: str,
                        alert_id: str | None = None, allocation: list | None = None,
                        decided_by: str | None = None) -> dict:
    """The kam.instructions message; its id names the reference, the action and the event that caused it."""
    return {"instruction_id": output_id(f"instruction:{ref_id}:{action}:{caused_by}"), "kind": kind,
            "ref_id": ref_id, "action": action, "account_id": account_id, "key_account_id": key_account_id,
            "allocation": allocation or [], "reason": reason, "alert_id": alert_id, "decided_by": decided_by,
            "created_at": created_at}


def notice_message(*, kind: str, key_account_id: str, account_id: str, about: str, recipients: list[str],
                   title: str, detail: str, caused_by: str, created_at: str) -> dict:
    """The kam.notices message; its id is derived from (kind, caused_by, about) as CONTRACT §6 says."""
    return {"notice_id": output_id(f"notice:{kind}:{caused_by}:{about}"), "kind": kind,
            "key_account_id": key_account_id, "account_id": account_id, "about": about,
            "recipients": recipients, "title": title, "detail": detail, "caused_by": caused_by,
            "created_at": created_at}


def cut_text(text: str, limit: int) -> str:
    """`text`, cut to `limit` characters with a visible marker when longer."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(CUT_MARKER))] + CUT_MARKER


def fit_output(value: dict[str, Any], encoded_size: int) -> dict[str, Any]:
    """A message whose JSON text is too large for the broker, with its long texts cut so it fits.

    Called only for the rare message over `OUTPUT_VALUE_LIMIT`: its `title`, `detail`, `reason` and
    texts are cut, and a long `recipients` list is shortened with a count of who was left out (the
    full list stays in the store). What still does not fit is the relay's to set aside.
    """
    excess = encoded_size - OUTPUT_VALUE_LIMIT
    value = dict(value)
    for name in ("detail", "title", "reason"):
        if excess > 0 and isinstance(value.get(name), str) and len(value[name]) > 200:
            before = len(value[name].encode())
            value[name] = cut_text(value[name], max(200, len(value[name]) - excess - len(CUT_MARKER)))
            excess -= before - len(value[name].encode())
    for name in ("recipients",):
        items = value.get(name)
        if excess > 0 and isinstance(items, list) and len(items) > 1:
            keep = max(1, len(items) // 2)
            while keep > 1 and len(repr(items[keep:])) < excess:
                keep //= 2
            value[name] = items[:keep]
            value.setdefault("data", {})
            if isinstance(value["data"], dict):
                value["data"] = dict(value["data"], **{f"{name}_left_out": len(items) - keep})
            excess -= len(repr(items[keep:]))
    return value

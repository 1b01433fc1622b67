"""services/devkit/workload/: deterministic, every message a valid event of CONTRACT §2/§3, all types present."""

import json
from collections import Counter

from services.devkit.workload import TOPIC_BY_TYPE, generate, write_jsonl
from schemas.decode import decode_event
from schemas.registry import EVENT_MODELS, KEY_FIELD_BY_TOPIC, TOPIC_BY_TYPE as CONTRACT_TOPICS


def test_every_message_decodes_and_every_type_occurs():
    messages = generate(3000, seed=3, key_accounts=40, prefix="wt")
    assert len(messages) == 3000
    types = Counter()
    for topic, key, value in messages:
        event = decode_event(value)
        types[event.type] += 1
        assert topic == CONTRACT_TOPICS[event.type]
        assert key.decode() == getattr(event.data, KEY_FIELD_BY_TOPIC[topic])
        assert event.id.startswith("wt-")
    assert set(types) == set(EVENT_MODELS), set(EVENT_MODELS) - set(types)
    assert TOPIC_BY_TYPE == CONTRACT_TOPICS


def test_master_data_first_redeliveries_and_stale_versions():
    messages = generate(5000, seed=5, key_accounts=50, prefix="wt")
    topics = [topic for topic, _, _ in messages]
    first_other = next(i for i, t in enumerate(topics) if t != "crm.accounts")
    master = messages[:first_other]
    # after the master data, crm.accounts only sees exact redeliveries of it
    assert all(m in master for m in messages[first_other:] if m[0] == "crm.accounts")
    events = [json.loads(v) for _, _, v in messages]
    ids = Counter((e["source"], e["id"]) for e in events)
    redelivered = sum(n - 1 for n in ids.values())
    assert 10 <= redelivered <= 150  # about 1 %
    seen: dict[str, int] = {}
    stale = 0
    for e in events:
        version = e["data"].get("version")
        if version is None or ids[(e["source"], e["id"])] > 1:
            continue
        agreement = e["data"]["agreement_id"]
        stale += version <= seen.get(agreement, 0)
        seen[agreement] = max(seen.get(agreement, 0), version)
    assert stale >= 3
    roots = {e["data"]["account_id"]: e["data"]["tier"] for e in events
             if e["type"] == "account.upserted" and e["data"]["parent_id"] is None}
    tiers = Counter(roots.values())
    assert tiers["none"] >= 25 and sum(tiers.values()) - tiers["none"] == 50


def test_deterministic_and_prefixed(tmp_path):
    a = generate(1500, seed=9, key_accounts=20, prefix="x1")
    assert a == generate(1500, seed=9, key_accounts=20, prefix="x1")
    assert a != generate(1500, seed=10, key_accounts=20, prefix="x1")
    path = tmp_path / "w.jsonl"
    assert write_jsonl(path, a) == 1500
    lines = path.read_text().splitlines()
    assert [line.encode() for line in lines] == [v for _, _, v in a]


def test_dates_in_2027_2028():
    for _, _, value in generate(3000, seed=2, key_accounts=30, prefix="wd"):
        data = json.loads(value)["data"]
        for name in ("valid_from", "valid_to"):
            if data.get(name):
                assert data[name][:4] in ("2027", "2028"), data

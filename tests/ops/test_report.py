"""The KPI report: figures checked against a hand-computed case, and its speed on 100,000 alerts."""

from __future__ import annotations

import time
from datetime import date, datetime, timezone

import pytest

from services.report import build_report
from services.report.kpis import compute_kpis, weekly_backlog
from services.report.load import Period, load_alert_facts
from tests.ops.report_data import alert_row, history_row, workload, write

UTC = timezone.utc


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def hand_case(engine) -> None:
    """Two weeks, 2027-03-01 (Mon) to 2027-03-14 (Sun); the expected figures are worked out in the test."""
    alerts, history = [], []

    def add(alert_id, rule, severity, key_account, kam, opened, status, *changes):
        alerts.append(alert_row(alert_id, rule, severity, key_account, kam, at(opened), status))
        history.append(history_row(alert_id, "open", kam, at(opened)))
        for change_status, assignee, moment, decided_by in changes:
            history.append(history_row(alert_id, change_status, assignee, at(moment), decided_by))

    add("A1", "key_account_dunning", "high", "KA-1", "kam-a", "2027-03-01T10:00:00", "resolved",
        ("acknowledged", "kam-a", "2027-03-01T12:00:00", "kam-a"), ("resolved", "kam-a", "2027-03-01T20:00:00", "kam-a"))
    add("A2", "key_account_dunning", "low", "KA-1", "kam-a", "2027-03-02T00:00:00", "resolved",
        ("resolved", "kam-a", "2027-03-02T05:00:00", None))  # resolved automatically: no decision
    add("A3", "scarce_stock_allocation", "high", "KA-2", "kam-a", "2027-03-03T00:00:00", "acknowledged",
        ("escalated", "senior-s", "2027-03-05T00:00:00", None),
        ("acknowledged", "senior-s", "2027-03-05T06:00:00", "senior-s"))
    add("A4", "local_price_below_global", "medium", "KA-2", "kam-b", "2027-03-09T12:00:00", "waived",
        ("waived", "kam-b", "2027-03-10T00:00:00", "kam-b"))
    add("A5", "local_price_below_global", "high", "KA-3", "kam-b", "2027-03-14T20:00:00", "open")
    add("A0", "duplicate_global_contract", "critical", "KA-3", "kam-b", "2027-02-20T00:00:00", "open")  # backlog only
    add("Aold", "unauthorized_commitment", "medium", "KA-3", "kam-b", "2027-02-10T00:00:00", "resolved",
        ("resolved", "kam-b", "2027-02-11T00:00:00", "kam-b"))  # before the period: not in the report
    add("Alate", "unauthorized_commitment", "medium", "KA-1", "kam-a", "2027-03-16T00:00:00", "open")  # after it
    write(engine, alerts, history)


def test_figures_match_the_hand_computed_case(store):
    hand_case(store)
    period = Period(date(2027, 3, 1), date(2027, 3, 14))
    facts = load_alert_facts(store, period)
    assert sorted(f.alert_id for f in facts) == ["A0", "A1", "A2", "A3", "A4", "A5"]
    kpis = compute_kpis(facts, period)

    total = kpis.total
    assert total.opened == 5
    assert dict(total.by_rule) == {"key_account_dunning": 2, "scarce_stock_allocation": 1,
                                   "local_price_below_global": 2}
    # acknowledged after 2 h (A1), 54 h (A3, by the senior KAM after the escalation), 12 h (A4)
    assert sorted(total.to_acknowledge.hours) == [2, 12, 54]
    assert (total.to_acknowledge.median, total.to_acknowledge.p90) == (12, 54)
    # decided (closing decisions only; A2 resolved itself): 10 h (A1), 12 h (A4)
    assert (total.to_decide.median, total.to_decide.p90) == (11, 12)
    assert total.escalated == 1 and total.escalated_share == pytest.approx(0.2)
    assert (total.dunning, total.dunning_held, total.stock, total.stock_short) == (2, 1, 1, 1)
    # open at 2027-03-15T00:00: A3 (12 d), A0 (23 d), A5 (4 h)
    assert dict(total.backlog) == {"7–30 d": 2, "< 1 d": 1}

    kam_a, kam_b = kpis.by_kam["kam-a"], kpis.by_kam["kam-b"]
    assert "senior-s" not in kpis.by_kam  # measured for the KAM it was opened for
    assert (kam_a.opened, kam_a.escalated, kam_a.open_backlog) == (3, 1, 1)
    assert (kam_a.to_acknowledge.median, kam_a.to_acknowledge.p90) == (28, 54)
    assert (kam_a.to_decide.median, kam_a.to_decide.p90) == (10, 10)
    assert (kam_b.opened, kam_b.escalated, kam_b.open_backlog) == (2, 0, 2)
    assert (kam_b.to_acknowledge.median, kam_b.to_decide.median) == (12, 12)

    ka2 = kpis.by_key_account["KA-2"]
    assert (ka2.opened, ka2.to_acknowledge.median, ka2.to_acknowledge.p90, ka2.escalated_share) == (2, 33, 54, 0.5)
    assert kpis.by_key_account["KA-3"].opened == 1 and kpis.by_key_account["KA-3"].open_backlog == 2

    assert [(w.isoformat(), g.opened) for w, g in kpis.weeks.items()] == [("2027-03-01", 3), ("2027-03-08", 2)]
    assert weekly_backlog(facts, list(kpis.weeks), UTC) == [2, 3]


def test_report_file_shows_the_figures(store, tmp_path):
    hand_case(store)
    written = build_report(store, start=date(2027, 3, 1), end=date(2027, 3, 14), out=tmp_path / "report.html",
                           now=at("2027-03-20T00:00:00"))
    html = written.html.read_text()
    assert written.alerts == 5
    assert "2027-03-01 – 2027-03-14" in html
    assert "12.0 h" in html and "20 %" in html  # median time to acknowledge, escalated share
    assert html.count("data:image/png;base64,") == 4 and "<script" not in html  # self-contained, no scripts
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written.pngs) and len(written.pngs) == 4


def test_report_of_100000_alerts_renders_in_under_10_seconds(store, tmp_path):
    end = at("2027-06-07T00:00:00")
    alerts, history = workload(100_000, end=end)
    write(store, alerts, history)
    began, began_cpu = time.perf_counter(), time.process_time()
    written = build_report(store, start=None, end=date(2027, 6, 6), out=tmp_path / "report.html", now=end)
    seconds, cpu = time.perf_counter() - began, time.process_time() - began_cpu
    print(f"\nKPI report of 100,000 alerts ({len(history)} history rows): {seconds:.2f} s wall, {cpu:.2f} s CPU")
    assert written.alerts == 100_000
    # The work itself (CPU of this process, matplotlib's import included; SQLite runs in it) must stay
    # under 10 s. The wall time also counts the waits for the machine's 2 cores, shared with every other
    # test run (load averages of 10-16 were seen): it only guards against a hang.
    assert cpu < 10
    assert seconds < 120

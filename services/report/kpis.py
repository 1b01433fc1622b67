"""The KPIs a key-account programme is judged by, computed from alert facts (pure, no I/O).

Definitions (also printed in the report):
- *opened*: alerts created in the period, by rule; attributed to the KAM they were first
  assigned to (an escalation does not move the measure to the senior KAM) and to their key account.
- *time to acknowledge*: opening to the first decision of any kind; *time to decide*: opening
  to the first decision that closed the alert (resolve, waive, release, proceed). Automatic
  resolutions are no decisions. Median and p90 (nearest rank) over the alerts that have one.
- *escalated*: share of the opened alerts that were escalated (by the end of the period).
- *dunning* / *stock*: `key_account_dunning` / `scarce_stock_allocation` alerts opened; of them
  *held* (high severity: a delivery block or collection on hold) / *short* (a key-account order
  got less than it asked).
- *open backlog by age*: alerts open at the end of the period, by days since opening.
"""

from __future__ import annotations

import bisect
import math
import operator
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import NamedTuple
from datetime import date, datetime, timedelta

from services.report.load import AlertFacts, Period

BACKLOG_BUCKETS = ((1, "< 1 d"), (2, "1–2 d"), (7, "2–7 d"), (30, "7–30 d"), (math.inf, "≥ 30 d"))
DUNNING, STOCK = "key_account_dunning", "scarce_stock_allocation"


def nearest_rank(sorted_values: list[float], q: float) -> float | None:
    """The q-quantile by nearest rank: the smallest value with at least q of the values at or below it."""
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


class Durations:
    """Hours from opening to a milestone, over the alerts of a group that reached it."""

    __slots__ = ("hours", "_sorted")

    def __init__(self, hours: list[float] | None = None):
        self.hours = hours if hours is not None else []
        self._sorted: list[float] | None = None

    def add(self, start: datetime, end: datetime | None) -> None:
        if end is not None:
            self.hours.append((end - start).total_seconds() / 3600)
            self._sorted = None

    def _values(self) -> list[float]:
        if self._sorted is None:
            self._sorted = sorted(self.hours)
        return self._sorted

    @property
    def median(self) -> float | None:
        values = self._values()
        if not values:
            return None
        middle = len(values) // 2
        return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2

    @property
    def p90(self) -> float | None:
        return nearest_rank(self._values(), 0.9)


@dataclass
class Group:
    """The KPIs of one KAM, one key account, one week, or everything."""

    name: str
    opened: int = 0
    by_rule: Counter = field(default_factory=Counter)
    to_acknowledge: Durations = field(default_factory=Durations)
    to_decide: Durations = field(default_factory=Durations)
    escalated: int = 0
    dunning: int = 0
    dunning_held: int = 0
    stock: int = 0
    stock_short: int = 0
    backlog: Counter = field(default_factory=Counter)  # bucket label -> open alerts

    @property
    def escalated_share(self) -> float | None:
        return self.escalated / self.opened if self.opened else None

    @property
    def open_backlog(self) -> int:
        return sum(self.backlog.values())

    @classmethod
    def of(cls, name: str, opened: list[_Measured], backlog: list[str]) -> Group:
        """The KPIs of the alerts opened in the period (`opened`) and the age buckets of those still open."""
        by_rule = Counter(map(_RULE, opened))
        return cls(name, opened=len(opened), by_rule=by_rule,
                   to_acknowledge=Durations([h for h in map(_ACK, opened) if h is not None]),
                   to_decide=Durations([h for h in map(_DECIDE, opened) if h is not None]),
                   escalated=sum(map(_ESCALATED, opened)),
                   dunning=by_rule[DUNNING], dunning_held=sum(map(_HELD, opened)),
                   stock=by_rule[STOCK], stock_short=sum(map(_SHORT, opened)), backlog=Counter(backlog))


class _Measured(NamedTuple):
    """What one alert opened in the period contributes, worked out once for all its groups."""

    rule: str
    ack_h: float | None
    decide_h: float | None
    escalated: bool
    dunning_held: bool
    stock_short: bool


_RULE, _ACK, _DECIDE, _ESCALATED, _HELD, _SHORT = (operator.itemgetter(i) for i in range(6))


@dataclass
class Kpis:
    period: Period
    total: Group
    by_kam: dict[str, Group]
    by_key_account: dict[str, Group]
    weeks: dict[date, Group]  # Monday of each ISO week in the period
    rules: list[str]


def backlog_bucket(age: timedelta) -> str:
    days = age.total_seconds() / 86400
    return next(label for limit, label in BACKLOG_BUCKETS if days < limit)


def compute_kpis(alerts: list[AlertFacts], period: Period, as_of: datetime | None = None) -> Kpis:
    """Every KPI of the report. The backlog is taken at `as_of` (the end of the period, or now when the
    period ends today). Each alert is measured once, then its figures are gathered per group."""
    begins, ends = period.begins, period.ends
    as_of = min(as_of or ends, ends)
    opened: dict[str, dict[str, list]] = {"kam": defaultdict(list), "account": defaultdict(list),
                                          "week": defaultdict(list)}
    backlog: dict[str, dict[str, list]] = {"kam": defaultdict(list), "account": defaultdict(list)}
    all_opened, all_backlog = [], []
    week_of: dict[date, date] = {}
    for alert in alerts:
        if alert.opened >= begins:
            high = alert.severity in ("high", "critical")
            opened_at, ack, decided = alert.opened, alert.acknowledged, alert.decided
            measured = _Measured(alert.rule, (ack - opened_at).total_seconds() / 3600 if ack else None,
                                 (decided - opened_at).total_seconds() / 3600 if decided else None,
                                 alert.escalated is not None and alert.escalated < ends,
                                 high and alert.rule == DUNNING, high and alert.rule == STOCK)
            all_opened.append(measured)
            opened["kam"][alert.kam].append(measured)
            opened["account"][alert.key_account_id].append(measured)
            day = opened_at.date()
            week = week_of.get(day)
            if week is None:
                week = week_of[day] = day - timedelta(days=day.weekday())
            opened["week"][week].append(measured)
        if alert.opened < as_of and (alert.closed is None or alert.closed >= as_of):
            bucket = backlog_bucket(as_of - alert.opened)
            all_backlog.append(bucket)
            backlog["kam"][alert.kam].append(bucket)
            backlog["account"][alert.key_account_id].append(bucket)

    def groups(kind: str) -> dict[str, Group]:
        names = set(opened[kind]) | set(backlog[kind])
        return {name: Group.of(name, opened[kind].get(name, []), backlog[kind].get(name, [])) for name in names}

    weeks = {}
    monday = period.start - timedelta(days=period.start.weekday())
    while monday <= period.end:
        weeks[monday] = Group.of(monday.isoformat(), opened["week"].get(monday, []), [])
        monday += timedelta(days=7)
    total = Group.of("all", all_opened, all_backlog)
    rules = sorted(total.by_rule, key=lambda rule: (-total.by_rule[rule], rule))
    return Kpis(period, total, groups("kam"), groups("account"), weeks, rules)


def ranked(groups: dict[str, Group], limit: int | None = None) -> list[Group]:
    """Most exceptions first (opened, then open backlog), then by name."""
    ordered = sorted(groups.values(), key=lambda g: (-g.opened, -g.open_backlog, g.name))
    return ordered[:limit] if limit else ordered


def weekly_backlog(alerts: list[AlertFacts], weeks: list[date], tz) -> list[int]:
    """Alerts open at the end of each week (Sunday 24:00): opened before it minus closed before it."""
    opened = sorted(alert.opened for alert in alerts)
    closed = sorted(alert.closed for alert in alerts if alert.closed is not None)
    counts = []
    for week in weeks:
        week_end = datetime.combine(week + timedelta(days=7), datetime.min.time(), tz)
        counts.append(bisect.bisect_left(opened, week_end) - bisect.bisect_left(closed, week_end))
    return counts

"""The weekly trends and the backlog as PNG images (matplotlib's object API on the Agg canvas: no pyplot,
whose import alone cost a second, and no global figure state)."""

from __future__ import annotations

import io

from matplotlib.figure import Figure

from services.report.kpis import BACKLOG_BUCKETS, Kpis

COLOURS = ["#1f5f8b", "#e07b39", "#3c9d5d", "#c0392b", "#8e6cbf", "#7f8c8d", "#d4a017", "#2c3e50", "#16a085"]


def _png(fig, right: float = 0.76) -> bytes:
    # Fixed margins: matplotlib's constrained layout measured every label first, half of the drawing time.
    fig.subplots_adjust(left=0.09, right=right, top=0.88, bottom=0.22)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)  # the Agg canvas: no pyplot, no display, nothing global
    return buffer.getvalue()


def _week_axis(ax, labels: list[str]) -> None:
    step = max(1, len(labels) // 12)
    ax.set_xticks(range(0, len(labels), step), [labels[i] for i in range(0, len(labels), step)],
                  rotation=45, ha="right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)


def opened_by_rule(kpis: Kpis) -> bytes:
    weeks = list(kpis.weeks.values())
    labels = [w.name[5:] for w in weeks]
    fig = Figure(figsize=(8, 3.4))
    ax = fig.subplots()
    bottom = [0] * len(weeks)
    for i, rule in enumerate(kpis.rules):
        counts = [w.by_rule[rule] for w in weeks]
        ax.bar(range(len(weeks)), counts, bottom=bottom, label=rule, color=COLOURS[i % len(COLOURS)], width=0.8)
        bottom = [b + c for b, c in zip(bottom, counts)]
    ax.set_title("Alerts opened per week, by rule", fontsize=11, loc="left")
    _week_axis(ax, labels)
    if kpis.rules:
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def response_times(kpis: Kpis) -> bytes:
    weeks = list(kpis.weeks.values())
    labels = [w.name[5:] for w in weeks]
    fig = Figure(figsize=(8, 3.4))
    ax = fig.subplots()
    series = (("acknowledge, median", lambda w: w.to_acknowledge.median, "-", COLOURS[0]),
              ("acknowledge, p90", lambda w: w.to_acknowledge.p90, "--", COLOURS[0]),
              ("decide, median", lambda w: w.to_decide.median, "-", COLOURS[1]),
              ("decide, p90", lambda w: w.to_decide.p90, "--", COLOURS[1]))
    for label, value, style, colour in series:
        ax.plot(range(len(weeks)), [value(w) if value(w) is not None else float("nan") for w in weeks],
                style, label=label, color=colour, marker="o", markersize=3)
    ax.set_ylabel("hours")
    ax.set_title("Time to acknowledge and to decide (alerts opened that week)", fontsize=11, loc="left")
    _week_axis(ax, labels)
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def escalations_and_backlog(kpis: Kpis, backlog_at_week_end: list[int]) -> bytes:
    weeks = list(kpis.weeks.values())
    labels = [w.name[5:] for w in weeks]
    fig = Figure(figsize=(8, 3.4))
    ax = fig.subplots()
    shares = [100 * w.escalated_share if w.escalated_share is not None else float("nan") for w in weeks]
    ax.plot(range(len(weeks)), shares, "-", marker="o", markersize=3, color=COLOURS[3], label="escalated (%)")
    ax.set_ylabel("% of opened escalated", color=COLOURS[3])
    ax.set_ylim(bottom=0)
    twin = ax.twinx()
    twin.bar(range(len(weeks)), backlog_at_week_end, color=COLOURS[5], alpha=0.25, label="open at week end")
    twin.set_ylabel("open at week end", color=COLOURS[5])
    ax.set_zorder(twin.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set_title("Escalated share and open backlog per week", fontsize=11, loc="left")
    _week_axis(ax, labels)
    return _png(fig, right=0.88)


def backlog_by_age(kpis: Kpis) -> bytes:
    labels = [label for _, label in BACKLOG_BUCKETS]
    counts = [kpis.total.backlog[label] for label in labels]
    fig = Figure(figsize=(8, 3.4))
    ax = fig.subplots()
    bars = ax.bar(labels, counts, color=[COLOURS[2], COLOURS[0], COLOURS[6], COLOURS[1], COLOURS[3]])
    ax.bar_label(bars, fontsize=8)
    ax.set_title("Open backlog by age", fontsize=11, loc="left")
    ax.grid(axis="y", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig, right=0.97)

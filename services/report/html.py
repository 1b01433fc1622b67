"""The report as one self-contained HTML page: tables, and the plots embedded as data: URIs."""

from __future__ import annotations

import base64
from datetime import datetime
from html import escape

from services.report.kpis import BACKLOG_BUCKETS, Group, Kpis, ranked

TABLE_ROWS = 50  # per table; the rest are summed up in the "others" line

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1400px;color:#222;
padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
.sub{color:#666;margin-top:0}
.cards{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}
.card{border:1px solid #ddd;border-radius:8px;padding:.7rem 1rem;min-width:9rem}
.card b{display:block;font-size:1.5rem} .card span{color:#666;font-size:.85rem}
table{border-collapse:collapse;width:100%;font-size:.8rem}
th,td{padding:.3rem .5rem;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
th{background:#f6f7f9;position:sticky;top:0} td:first-child,th:first-child{text-align:left}
td.rules{text-align:left;white-space:normal;color:#555;font-size:.8rem}
tr.total td{font-weight:600;border-top:2px solid #ccc}
.plots{display:grid;grid-template-columns:1fr 1fr;gap:1rem} .plots img{width:100%;border:1px solid #eee}
dl{font-size:.85rem;color:#444} dt{font-weight:600;margin-top:.4rem}
"""


def _hours(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f} h" if value < 48 else f"{value / 24:.1f} d"


def _share(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def _row(group: Group, css: str = "") -> str:
    rules = ", ".join(f"{rule} {n}" for rule, n in group.by_rule.most_common(3))
    cells = [escape(group.name), str(group.opened), _hours(group.to_acknowledge.median),
             _hours(group.to_acknowledge.p90), _hours(group.to_decide.median), _hours(group.to_decide.p90),
             _share(group.escalated_share), f"{group.dunning} ({group.dunning_held})",
             f"{group.stock} ({group.stock_short})", str(group.open_backlog),
             *(str(group.backlog[label]) for _, label in BACKLOG_BUCKETS)]
    tds = "".join(f"<td>{c}</td>" for c in cells)
    return f'<tr class="{css}">{tds}<td class="rules">{escape(rules)}</td></tr>'


def _table(title: str, who: str, groups: dict[str, Group], total: Group) -> str:
    heads = [who, "opened", "ack median", "ack p90", "decide median", "decide p90", "escalated",
             "dunning (held)", "stock (short)", "open", *(label for _, label in BACKLOG_BUCKETS), "top rules"]
    shown = ranked(groups, TABLE_ROWS)
    rows = "".join(_row(g) for g in shown)
    rest = len(groups) - len(shown)
    note = f"<p class=sub>{len(groups)} in all; the {TABLE_ROWS} with most exceptions are shown.</p>" if rest > 0 else ""
    head = "".join(f"<th>{escape(h)}</th>" for h in heads)
    return (f"<h2>{escape(title)}</h2>{note}<table><thead><tr>{head}</tr></thead><tbody>{rows}"
            f"{_row(total, 'total')}</tbody></table>")


def _card(value: str, label: str) -> str:
    return f'<div class="card"><b>{escape(value)}</b><span>{escape(label)}</span></div>'


def render_html(kpis: Kpis, plots: dict[str, bytes], generated: datetime) -> str:
    total = kpis.total
    cards = "".join([
        _card(str(total.opened), "alerts opened"),
        _card(_hours(total.to_acknowledge.median), "median time to acknowledge"),
        _card(_hours(total.to_decide.median), "median time to decide"),
        _card(_share(total.escalated_share), "escalated"),
        _card(str(total.dunning), f"dunning exceptions ({total.dunning_held} held)"),
        _card(str(total.stock), f"stock exceptions ({total.stock_short} short)"),
        _card(str(total.open_backlog), "open at the end"),
    ])
    images = "".join(f'<img alt="{escape(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                     for name, png in plots.items())
    by_rule = "".join(f"<tr><td>{escape(rule)}</td><td>{total.by_rule[rule]}</td></tr>" for rule in kpis.rules)
    period = f"{kpis.period.start.isoformat()} – {kpis.period.end.isoformat()}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>onevoice KPI report {period}</title>
<style>{STYLE}</style></head><body>
<h1>Key-account exceptions: KPI report</h1>
<p class="sub">{period} (UTC) · generated {generated.strftime('%Y-%m-%d %H:%M')} UTC by onevoice</p>
<div class="cards">{cards}</div>
<h2>Weekly trends</h2><div class="plots">{images}</div>
<h2>Alerts opened by rule</h2><table style="width:auto"><thead><tr><th>rule</th><th>opened</th></tr></thead>
<tbody>{by_rule}</tbody></table>
{_table("Per KAM (the assignee an alert was opened for)", "KAM", kpis.by_kam, total)}
{_table("Per key account", "key account", kpis.by_key_account, total)}
<h2>How the figures are measured</h2>
<dl><dt>opened</dt><dd>alerts created in the period, counted for the KAM they were first assigned to.</dd>
<dt>time to acknowledge / to decide</dt><dd>from opening to the first decision of any kind / to the first decision
that closed the alert (resolve, waive, release, proceed); automatic resolutions are not decisions. Median, and p90 by
nearest rank, over the alerts that have one.</dd>
<dt>escalated</dt><dd>share of the opened alerts escalated by the end of the period.</dd>
<dt>dunning (held) / stock (short)</dt><dd>key-account dunning alerts (those holding a delivery block or collection)
/ scarce-stock alerts (those where a key-account order got less than it asked).</dd>
<dt>open, by age</dt><dd>alerts open at the end of the period, by days since opening.</dd></dl>
</body></html>
"""

"""Bar charts of use per day, drawn on the server as inline SVG: no script, nothing from another
site, and a test can read every bar.

The page's Content-Security-Policy forbids inline styles, so the SVG carries geometry only
(presentation attributes, which the policy allows) and class names; app.css colours them from
the theme's variables, so a chart follows light and dark like the rest of the page. Each chart
is an ``img`` named by its ``<title>`` and summed up by its ``<desc>``; each bar segment has a
``<title>`` (a tooltip, read out by screen readers) with its day, series and value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

WIDTH = 720
HEIGHT = 220
LEFT, RIGHT, TOP, BOTTOM = 72, 8, 14, 30
"""Room for the value axis on the left and the day labels below (app.css enlarges the labels
on a phone, where the chart is drawn at half its size)."""
TICKS = 4
MAX_BAR = 36.0
"""A day's bar is never wider than this, however few days the chart has."""
MAX_DAY_LABELS = 12
SERIES_COLOURS = 8
"""app.css defines .s0 … .s7; further series reuse them in turn."""


@dataclass(frozen=True, slots=True)
class Series:
    """One stacked part of every bar (a model), by day ``YYYY-MM-DD``."""

    name: str
    values: dict[str, float]


def axis(highest: float) -> tuple[float, int]:
    """The value axis: a step of 1, 2, 2.5 or 5 times a power of ten, and how many steps reach
    ``highest`` (about TICKS of them), so the grid lines fall on round numbers."""
    if highest <= 0:
        return 1.0 / TICKS, TICKS
    rough = highest / TICKS
    power = 10 ** math.floor(math.log10(rough))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if rough <= m * power * (1 + 1e-9))
    return float(step), max(1, math.ceil(highest / step - 1e-9))


def compact(value: float) -> str:
    """A short axis label: 0, 950, 12k, 1.5M, 0.25, 0.004."""
    if value == 0:
        return "0"
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1_000:
        return f"{value / 1_000:g}k"
    if value >= 1:
        return f"{value:g}"
    return f"{value:.6f}".rstrip("0")


def day_label(day: str, same_month: bool) -> str:
    return str(int(day[8:])) if same_month else day[5:]


def bar_chart(chart_id: str, title: str, days: Sequence[str], series: Sequence[Series],
              fmt: Callable[[float], str], *, empty: str = "No use in this period") -> Markup:
    """Stacked bars, one per day of ``days``, a segment per series with a value that day.
    ``fmt`` writes a value in full, with its unit (tooltips and the description); ``empty``
    is written across a chart without a bar."""
    totals = {day: sum(s.values.get(day, 0.0) for s in series) for day in days}
    busiest = max(days, key=lambda d: totals[d]) if days else None
    step, steps = axis(totals[busiest] if busiest else 0.0)
    top = step * steps
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(days))
    bar_w = min(MAX_BAR, max(1.0, slot * 0.72))
    used = [d for d in days if totals[d] > 0]
    if used and busiest is not None:
        summary = (f"{len(used)} of {len(days)} days with use; total {fmt(sum(totals.values()))}"
                   f"; highest {fmt(totals[busiest])} on {busiest}.")
    else:
        summary = f"No use in these {len(days)} days."
    if len(series) > 1:
        summary += " By " + ", ".join(s.name for s in series) + "."
    parts = [
        f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc" '
        'preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f'<desc id="{escape(chart_id)}-desc">{escape(summary)}</desc>',
    ]
    for n in range(steps + 1):
        value = step * n
        y = TOP + plot_h - plot_h * n / steps
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" '
                     f'y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" '
                     f'text-anchor="end">{escape(compact(value))}</text>')
    same_month = len({d[:7] for d in days}) <= 1
    every = max(1, math.ceil(len(days) / MAX_DAY_LABELS))
    for index, day in enumerate(days):
        x = LEFT + slot * index + (slot - bar_w) / 2
        if index % every == 0:
            parts.append(f'<text class="axis" x="{x + bar_w / 2:.1f}" y="{HEIGHT - 8}" '
                         f'text-anchor="middle">{escape(day_label(day, same_month))}</text>')
        if totals[day] <= 0:
            continue
        parts.append(f'<g class="day" data-day="{day}">')
        base = float(TOP + plot_h)
        for number, one in enumerate(series):
            value = one.values.get(day, 0.0)
            if value <= 0:
                continue
            height = max(1.0, plot_h * value / top)
            base -= height
            label = f"{day} · {one.name}: {fmt(value)}" if len(series) > 1 \
                else f"{day}: {fmt(value)}"
            parts.append(f'<rect class="bar s{number % SERIES_COLOURS}" x="{x:.1f}" '
                         f'y="{base:.1f}" width="{bar_w:.1f}" height="{height:.1f}">'
                         f'<title>{escape(label)}</title></rect>')
        parts.append("</g>")
    if not used:
        parts.append(f'<text class="empty" x="{LEFT + plot_w / 2:.1f}" '
                     f'y="{TOP + plot_h / 2:.1f}" text-anchor="middle">'
                     f'{escape(empty)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))

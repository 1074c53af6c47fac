"""The SVG charts drawn on the server (no browser needed): round axis steps, a bar segment per
series and day with use, names escaped, and a chart without use that says so."""

from __future__ import annotations

import re

import pytest

from core.storage.usage_report import UsageLine
from web.ui.charts import Series, axis, bar_chart, compact
from web.ui.usage import by_model

DAYS = ["2026-12-01", "2026-12-02", "2026-12-03"]


def tokens(value: float) -> str:
    return f"{value:,.0f} tokens"


@pytest.mark.parametrize(("highest", "step", "steps"), [
    (0, 0.25, 4), (224, 100, 3), (1755, 500, 4), (1000, 250, 4), (7, 2, 4),
    (0.00378, 0.001, 4), (1, 0.25, 4),
])
def test_the_axis_steps_are_round_and_reach_the_highest_bar(highest: float, step: float,
                                                            steps: int) -> None:
    assert axis(highest) == (pytest.approx(step), steps)
    assert step * steps >= highest


@pytest.mark.parametrize(("value", "text"), [
    (0, "0"), (950, "950"), (12_000, "12k"), (1_500_000, "1.5M"), (0.25, "0.25"),
    (0.004, "0.004"),
])
def test_axis_labels_are_short(value: float, text: str) -> None:
    assert compact(value) == text


def test_bars_stack_by_series_only_on_days_with_use() -> None:
    svg = str(bar_chart("c", "Tokens <per> day", DAYS, [
        Series("model-a", {"2026-12-01": 100, "2026-12-03": 50}),
        Series("<b>evil</b>", {"2026-12-03": 150}),
    ], tokens))
    assert re.findall(r'data-day="([^"]+)"', svg) == ["2026-12-01", "2026-12-03"]
    assert re.findall(r"<rect[^>]*><title>([^<]*)</title>", svg) == [
        "2026-12-01 · model-a: 100 tokens", "2026-12-03 · model-a: 50 tokens",
        "2026-12-03 · &lt;b&gt;evil&lt;/b&gt;: 150 tokens"]
    assert "<b>" not in svg
    assert '<title id="c-title">Tokens &lt;per&gt; day</title>' in svg
    assert 'role="img" aria-labelledby="c-title c-desc"' in svg
    assert "2 of 3 days with use; total 300 tokens; highest 200 tokens on 2026-12-03" in svg
    # Heights in proportion: the 200-token day is twice the 100-token day (axis top 200).
    heights = [float(h) for h in re.findall(r'<rect[^>]* height="([\d.]+)"', svg)]
    assert heights[1] + heights[2] == pytest.approx(2 * heights[0], rel=0.01)
    # Colours come from classes (the page's policy allows no inline style).
    assert "style=" not in svg and 'class="bar s0"' in svg and 'class="bar s1"' in svg


def test_a_chart_without_use_says_so() -> None:
    svg = str(bar_chart("c", "Cost", DAYS, [], tokens, empty="No cost in this period"))
    assert "<rect" not in svg
    assert ">No cost in this period</text>" in svg
    assert "No use in these 3 days." in svg


def test_past_eight_models_the_quietest_share_one_series() -> None:
    ranked = [f"m{n}" for n in range(10)]
    lines = [UsageLine(key="2026-12-01", model=name, requests=1, input_tokens=10 - n,
                       cost=0.5) for n, name in enumerate(ranked)]
    lines.append(UsageLine(key="2026-12-02", model=None, input_tokens=4))
    names, token_values, cost_values, per_day = by_model(lines, [*ranked, "(no model)"])
    assert names == [*(f"m{n}" for n in range(7)), "other models"]
    assert token_values["m0"] == {"2026-12-01": 10}
    assert token_values["other models"] == {"2026-12-01": 3 + 2 + 1, "2026-12-02": 4}
    assert cost_values["other models"]["2026-12-01"] == pytest.approx(1.5)
    assert per_day["2026-12-01"] == [10, 55, pytest.approx(5.0)]

    eight = by_model(lines[:8], ranked[:8])[0]
    assert eight == ranked[:8]  # eight fit: no "other models" standing for one

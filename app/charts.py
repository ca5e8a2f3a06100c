"""Charts: pure functions from totals to plotly figures; templates only place them.

Figures are built as plain plotly figure dicts wrapped in go.Figure only when asked for (the
test-facing API); the pages serialise the dict directly, which is many times faster than validating
a go.Figure on every page view.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from app.domain.responses import LABELS, Response

# Delivery chart order and colours: the journey of a message, then the failures and not-sent.
DELIVERY_ORDER: tuple[tuple[Response, str], ...] = (
    (Response.PLANNED, "#c9ced8"),
    (Response.DEFERRED, "#e8c77a"),
    (Response.SENT, "#8fa8f5"),
    (Response.DELIVERED, "#2f5bea"),
    (Response.OPENED, "#1a7f4b"),
    (Response.CLICKED, "#0b5d35"),
    (Response.SOFT_BOUNCE, "#e3a13b"),
    (Response.HARD_BOUNCE, "#c0362c"),
    (Response.BLOCKED, "#8c1d40"),
    (Response.DROPPED, "#a35a00"),
    (Response.SPAM, "#6b1d8c"),
    (Response.UNSUBSCRIBED, "#5c6b8a"),
    (Response.DELIVERY_ERROR, "#7a271a"),
    (Response.UNKNOWN, "#98a2b3"),
    (Response.DUPLICATE, "#d0d5dd"),
    (Response.DO_NOT_EMAIL, "#d0d5dd"),
    (Response.TYPE_UNSUBSCRIBED, "#d0d5dd"),
    (Response.INVALID_ADDRESS, "#d0d5dd"),
    (Response.INACTIVE, "#d0d5dd"),
    (Response.CANCELED, "#b0b6c3"),
    (Response.EXPIRED, "#b0b6c3"),
)

_LAYOUT: dict[str, Any] = {
    "margin": {"l": 40, "r": 10, "t": 30, "b": 40},
    "paper_bgcolor": "rgba(0,0,0,0)",
    "plot_bgcolor": "rgba(0,0,0,0)",
    "font": {"family": "system-ui, sans-serif", "size": 12},
    "height": 300,
}


def delivery_figure_dict(responses: dict[Response, int]) -> dict[str, Any]:
    """Recipients per current response as a horizontal bar chart (responses with none left out)."""
    present = [(r, colour) for r, colour in DELIVERY_ORDER if responses.get(r, 0) > 0]
    labels = [LABELS[r] for r, _ in present]
    values = [responses[r] for r, _ in present]
    return {
        "data": [{
            "type": "bar", "orientation": "h", "x": values, "y": labels,
            "marker": {"color": [c for _, c in present]},
            "hovertemplate": "%{y}: %{x:,}<extra></extra>",
        }],
        "layout": {**_LAYOUT, "title": {"text": "Responses"},
                   "yaxis": {"autorange": "reversed", "automargin": True},
                   "xaxis": {"rangemode": "tozero"},
                   "height": max(160, 40 + 26 * len(present))},
    }


HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def time_axis(moments: Sequence[datetime]) -> dict[str, Any]:
    """A date axis with real hour ticks (or day ticks over long ranges), never finer.

    Plotly picks sub-second ticks on its own when every point shares one hour; an explicit
    range of at least two hours around the points and a fixed tick step prevent that.
    """
    axis: dict[str, Any] = {"type": "date", "title": {"text": "UTC"}}
    if not moments:
        return axis
    first, last = min(moments), max(moments)
    start, end = first - timedelta(hours=1), last + timedelta(hours=1)
    span_hours = (end - start).total_seconds() / 3600
    if span_hours <= 12:
        axis.update(dtick=HOUR_MS, tickformat="%H:%M\n%b %d")
    elif span_hours <= 48:
        axis.update(dtick=3 * HOUR_MS if span_hours <= 24 else 6 * HOUR_MS,
                    tickformat="%H:%M\n%b %d")
    else:
        days = max(1, round(span_hours / 24 / 10))
        axis.update(dtick=days * DAY_MS, tickformat="%b %d")
        start = start.replace(hour=0)
        end = end.replace(hour=0) + timedelta(days=1)
    axis.update(tick0=start.strftime("%Y-%m-%d %H:00"),
                range=[start.strftime("%Y-%m-%d %H:%M"), end.strftime("%Y-%m-%d %H:%M")])
    return axis


def activity_figure_dict(opens: Sequence[tuple[datetime, int]],
                         clicks: Sequence[tuple[datetime, int]]) -> dict[str, Any]:
    """Opens and clicks per hour (UTC) as two lines, every open and click (people and machines)."""

    def trace(points: Sequence[tuple[datetime, int]], name: str, colour: str) -> dict[str, Any]:
        return {"type": "scatter", "mode": "lines+markers", "name": name,
                "x": [t.strftime("%Y-%m-%d %H:%M") for t, _ in points],
                "y": [n for _, n in points], "line": {"color": colour, "shape": "hv"},
                "hovertemplate": "%{x|%b %d %H:00} UTC: %{y:,}<extra>" + name + "</extra>"}

    return {
        "data": [trace(opens, "Opens", "#1a7f4b"), trace(clicks, "Clicks", "#2f5bea")],
        "layout": {**_LAYOUT, "title": {"text": "Opens and clicks per hour (all, UTC)"},
                   "xaxis": time_axis([t for t, _ in [*opens, *clicks]]),
                   "yaxis": {"rangemode": "tozero"},
                   "legend": {"orientation": "h"}},
    }


def delivery_figure(responses: dict[Response, int]) -> Any:
    """The delivery chart as a plotly figure."""
    import plotly.graph_objects as go

    return go.Figure(delivery_figure_dict(responses))


def activity_figure(opens: Sequence[tuple[datetime, int]],
                    clicks: Sequence[tuple[datetime, int]]) -> Any:
    """The opens-and-clicks-over-time chart as a plotly figure."""
    import plotly.graph_objects as go

    return go.Figure(activity_figure_dict(opens, clicks))


def to_json(figure: Any) -> str:
    """JSON for Plotly.newPlot, safe to embed in a <script> element."""
    if not isinstance(figure, dict):
        figure = figure.to_plotly_json()
    text = json.dumps(figure, separators=(",", ":"), default=str)
    # No "</script>" or HTML comment can end the script element early.
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def rates_figure_dict(names: Sequence[str], open_rates: Sequence[float],
                      click_rates: Sequence[float], bounce_rates: Sequence[float],
                      keys: Sequence[object] | None = None) -> dict[str, Any]:
    """Open, click and bounce rates (people per message sent) of the last mailings, as grouped
    bars, one group per mailing, oldest on the left.

    `keys` (the mailings' ids) tell the groups apart: two mailings of the same name are two
    groups, each labelled with its name, not one category that hides one behind the other."""
    categories = [str(k) for k in keys] if keys is not None else [str(n) for n in range(len(names))]

    def trace(values: Sequence[float], name: str, colour: str) -> dict[str, Any]:
        return {"type": "bar", "name": name, "x": categories, "y": [100 * v for v in values],
                "customdata": list(names), "marker": {"color": colour},
                "hovertemplate": "%{customdata}: %{y:.1f} %<extra>" + name + "</extra>"}

    return {
        "data": [trace(open_rates, "Open rate", "#1a7f4b"),
                 trace(click_rates, "Click rate", "#2f5bea"),
                 trace(bounce_rates, "Bounce rate", "#c0362c")],
        "layout": {**_LAYOUT, "title": {"text": "Last mailings: rates per message sent (%)"},
                   "barmode": "group", "yaxis": {"rangemode": "tozero", "ticksuffix": " %"},
                   "xaxis": {"automargin": True, "type": "category", "tickvals": categories,
                             "ticktext": list(names)},
                   "legend": {"orientation": "h"}},
    }

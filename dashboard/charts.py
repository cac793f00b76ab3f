"""The overview's charts: Plotly figures (plain dicts for plotly.js) and the same numbers as tables.

Pure: summaries in, figures and tables out. Money stays Decimal in the tables; the figures carry
floats, for drawing only (plotly.js has no decimal type), never for arithmetic.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from billing.statement import FEATURE_NAMES
from core.periods import next_month

from .forms import Period

FEATURE_COLORS = {
    "generation": "#4263eb",
    "upscaling": "#0ca678",
    "background_removal": "#f59f00",
    "captioning": "#ae3ec9",
    "magic_prompt": "#e8590c",
    "detection": "#1098ad",
    "pixelate": "#868e96",
    "training": "#d6336c",
}
ACCENT = "#4263eb"
BUDGET_COLOR = "#c92a2a"
FORECAST_COLOR = "#f08c00"
GRID = "#eceef1"
FONT = {"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 12, "color": "#1b1f24"}
OTHER = "Other features"
TOP_RESOLUTIONS = 12


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]  # cells: str, int or Decimal (money)
    footer: list[Any] = field(default_factory=list)
    money_columns: frozenset[int] = frozenset()  # column indexes holding USD amounts

    def labelled(self, row: list[Any]) -> list[tuple[str, Any, bool]]:
        """A row's cells with their column's name (a phone shows it beside each number: the
        table stacks) and whether they are money."""
        cells = enumerate(zip(self.columns, row, strict=True))
        return [(column, cell, index in self.money_columns) for index, (column, cell) in cells]

    @property
    def labelled_rows(self) -> list[list[tuple[str, Any, bool]]]:
        return [self.labelled(row) for row in self.rows]

    @property
    def labelled_footer(self) -> list[tuple[str, Any, bool]]:
        return self.labelled(self.footer)


@dataclass
class Chart:
    id: str
    title: str
    caption: str
    figure: dict[str, Any]
    table: Table
    empty: bool = False


def _usd(value: Decimal) -> float:
    return float(value)


def _layout(**overrides: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "margin": {"l": 64, "r": 16, "t": 36, "b": 48},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "font": FONT,
        "height": 320,
        "autosize": True,
        "showlegend": True,
        "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom", "traceorder": "normal"},
        "hoverlabel": {"font": FONT},
        "xaxis": {"gridcolor": GRID, "zeroline": False, "fixedrange": True},
        "yaxis": {"gridcolor": GRID, "zeroline": False, "tickprefix": "$", "rangemode": "tozero", "fixedrange": True},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(layout.get(key), dict):
            layout[key] = {**layout[key], **value}
        else:
            layout[key] = value
    return layout


def feature_label(feature: str) -> str:
    return FEATURE_NAMES.get(feature, feature.replace("_", " ").capitalize())


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


# --- Daily spend stacked by feature -------------------------------------------------------------

ANOMALY_COLOR = "#c92a2a"


@dataclass(frozen=True)
class AnomalyMark:
    """A spend anomaly as the daily chart marks it (budgets.models.SpendAnomaly's numbers)."""

    day: str  # ISO, UTC
    scope: str  # "Workspace" or the key's name and prefix
    amount: Decimal  # USD
    baseline: Decimal  # USD
    score: Decimal
    partial: bool  # judged on part of the day

    @classmethod
    def of(cls, anomaly) -> AnomalyMark:
        scope = f"Key {anomaly.api_key.name} ({anomaly.api_key.display_prefix})" if anomaly.api_key_id else "Workspace"
        return cls(anomaly.day.isoformat(), scope, anomaly.amount, anomaly.baseline, anomaly.score, anomaly.fraction < 1)

    @property
    def text(self) -> str:
        so_far = " so far" if self.partial else ""
        return f"{self.scope}: ${self.amount:,.2f}{so_far} vs usual ${self.baseline:,.2f} (score {self.score})"


def _anomaly_trace(marks: list[AnomalyMark], day_totals: dict[str, Decimal]) -> dict[str, Any]:
    """One marker above each anomalous day's bar, its hover giving amount against baseline."""
    by_day: dict[str, list[AnomalyMark]] = defaultdict(list)
    for mark in marks:
        by_day[mark.day].append(mark)
    days = sorted(by_day)
    return {
        "type": "scatter",
        "mode": "markers",
        "name": "Unusual spend",
        "x": days,
        "y": [_usd(day_totals.get(day, Decimal(0))) for day in days],
        "text": ["<br>".join(mark.text for mark in by_day[day]) for day in days],
        "marker": {"color": ANOMALY_COLOR, "symbol": "triangle-down", "size": 12, "line": {"color": "#fff", "width": 1}},
        "hovertemplate": "%{text}<extra>Unusual spend</extra>",
        "cliponaxis": False,
    }


def daily_by_feature(rows: list[dict], period: Period, anomalies: list[AnomalyMark] = ()) -> Chart:
    by_feature: dict[str, dict[str, Decimal]] = defaultdict(dict)
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        by_feature[row["feature"]][row["day"]] = row["amount"]
        totals[row["feature"]] += row["amount"]
    features = sorted(by_feature, key=lambda f: (-totals[f], f))
    days = [day.isoformat() for day in _days(period.start, period.end)]
    traces = [
        {
            "type": "bar",
            "name": feature_label(feature),
            "x": days,
            "y": [_usd(by_feature[feature].get(day, Decimal(0))) for day in days],
            "marker": {"color": FEATURE_COLORS.get(feature, ACCENT)},
            "hovertemplate": "%{y:$,.2f}<extra>%{fullData.name}</extra>",
        }
        for feature in features
    ]
    day_totals: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        day_totals[row["day"]] += row["amount"]
    marks = [mark for mark in anomalies if mark.day in day_totals]
    if marks:
        traces.append(_anomaly_trace(marks, day_totals))
    figure = {
        "data": traces,
        "layout": _layout(
            barmode="stack",
            bargap=0.25,
            hovermode="x unified",
            xaxis={"type": "date", "title": {"text": "UTC day"}},
        ),
    }
    days_with_usage = sorted({row["day"] for row in rows})
    notes: dict[str, list[str]] = defaultdict(list)
    for mark in marks:
        notes[mark.day].append(mark.text)
    table_rows = []
    for day in days_with_usage:
        amounts = [by_feature[feature].get(day, Decimal(0)) for feature in features]
        table_rows.append([day, *amounts, sum(amounts, Decimal(0)), *(["; ".join(notes[day])] if marks else [])])
    footer = ["Total", *[totals[f] for f in features], sum(totals.values(), Decimal(0)), *([""] if marks else [])]
    money = frozenset(range(1, len(features) + 2))
    return Chart(
        id="chart-daily",
        title="Daily spend by feature",
        caption="List price per UTC day, before plan discounts and the free tier."
        + (" ▼ marks a day of unusual spend (far above its recent history)." if marks else ""),
        figure=figure,
        table=Table(
            ["Day (UTC)", *[feature_label(f) for f in features], "Total", *(["Unusual spend"] if marks else [])],
            table_rows, footer, money,
        ),  # fmt: skip
        empty=not rows,
    )


# --- Cumulative spend against budgets and the forecast -------------------------------------------


def cumulative(
    rows: list[dict],
    period: Period,
    *,
    today: date,
    forecast_spend: Decimal | None,
    forecast_total: Decimal | None,
    budgets: list[tuple[str, Decimal]],
) -> Chart:
    """Spend accumulated through each UTC month (it starts again on the 1st, as budgets do),
    with each workspace budget as a line and, when the period reaches today, the month-end forecast."""
    trace, table_rows = _month_to_date(rows, period, today)
    traces: list[dict[str, Any]] = [trace]
    axis_end, footer = period.end, []
    if forecast_total is not None and forecast_spend is not None and period.start <= today <= period.end:
        forecast, month_end = _forecast_trace(today, forecast_spend, forecast_total)
        traces.append(forecast)
        axis_end = max(axis_end, month_end)
        footer = [f"Forecast for {month_end:%B %Y}", "", forecast_total]
    traces += [_budget_trace(label, amount, period.start, axis_end) for label, amount in budgets]
    figure = {
        "data": traces,
        "layout": _layout(
            hovermode="x unified",
            xaxis={"type": "date", "title": {"text": "UTC day"}, "range": [period.start.isoformat(), axis_end.isoformat()]},
        ),
    }
    caption = "Accumulated through each UTC month, starting again on the 1st, as budgets do."
    if budgets:
        caption += " Dotted: the workspace's monthly budgets."
    return Chart(
        id="chart-cumulative",
        title="Spend against budget and forecast",
        caption=caption,
        figure=figure,
        table=Table(["Day (UTC)", "Spend that day", "Month to date"], table_rows, footer, frozenset({1, 2})),
        empty=not rows,
    )


def _month_to_date(rows: list[dict], period: Period, today: date) -> tuple[dict[str, Any], list[list[Any]]]:
    """The month-to-date line through the period (up to today), and its table's rows (days with spend)."""
    daily: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        daily[row["day"]] += row["amount"]
    last_day = min(period.end, today)
    x, y, table_rows = [], [], []
    running, month = Decimal(0), None
    for day in _days(period.start, last_day) if period.start <= last_day else []:
        if day.replace(day=1) != month:
            month, running = day.replace(day=1), Decimal(0)
        spent = daily.get(day.isoformat(), Decimal(0))
        running += spent
        x.append(day.isoformat())
        y.append(_usd(running))
        if spent:
            table_rows.append([day.isoformat(), spent, running])
    trace = {
        "type": "scatter",
        "mode": "lines",
        "name": "Spend, month to date",
        "x": x,
        "y": y,
        "line": {"color": ACCENT, "width": 2.5, "shape": "hv"},
        "fill": "tozeroy",
        "fillcolor": "rgba(66,99,235,0.10)",
        "hovertemplate": "%{y:$,.2f}<extra>month to date</extra>",
    }
    return trace, table_rows


def _forecast_trace(today: date, forecast_spend: Decimal, forecast_total: Decimal) -> tuple[dict[str, Any], date]:
    """The dashed line from today's spend to the month-end forecast, and the month's last day."""
    month_end = next_month(today.replace(day=1)) - timedelta(days=1)
    trace = {
        "type": "scatter",
        "mode": "lines+markers",
        "name": f"Forecast: ${forecast_total:,.2f} by {month_end:%b %-d}",
        "x": [today.isoformat(), month_end.isoformat()],
        "y": [_usd(forecast_spend), _usd(forecast_total)],
        "line": {"color": FORECAST_COLOR, "width": 2, "dash": "dash"},
        "marker": {"size": 6},
        "hovertemplate": "%{y:$,.2f}<extra>forecast</extra>",
    }
    return trace, month_end


def _budget_trace(label: str, amount: Decimal, start: date, end: date) -> dict[str, Any]:
    return {
        "type": "scatter",
        "mode": "lines",
        "name": label,
        "x": [start.isoformat(), end.isoformat()],
        "y": [_usd(amount), _usd(amount)],
        "line": {"color": BUDGET_COLOR, "width": 1.5, "dash": "dot"},
        "hovertemplate": "%{y:$,.2f}<extra>budget</extra>",
    }


# --- Breakdowns ---------------------------------------------------------------------------------


def _breakdown(
    chart_id: str, title: str, caption: str, items: list[tuple[str, int, Decimal]], heading: str,
    chart_labels: list[str] | None = None,
) -> Chart:
    """`chart_labels`: shorter labels for the bars than the table's (which has room)."""
    total = sum((amount for _, _, amount in items), Decimal(0))
    labels = chart_labels or [label for label, _, _ in items]
    amounts = [amount for _, _, amount in items]
    figure = {
        "data": [
            {
                "type": "bar",
                "orientation": "h",
                "x": [_usd(a) for a in amounts],
                "y": labels,
                "marker": {"color": ACCENT},
                "text": [f"${a:,.2f}" for a in amounts],
                "textposition": "auto",
                "cliponaxis": False,
                "hovertemplate": "%{y}: %{x:$,.2f}<extra></extra>",
            }
        ],
        "layout": _layout(
            height=max(160, 56 + 30 * len(items)),
            showlegend=False,
            margin={"l": 150, "r": 24, "t": 4, "b": 32},
            xaxis={"tickprefix": "$", "rangemode": "tozero"},
            yaxis={"autorange": "reversed", "tickprefix": "", "automargin": True},
        ),
    }
    rows = [
        [label, quantity, amount, f"{(amount / total * 100 if total else 0):.1f} %"] for label, quantity, amount in items
    ]
    footer = ["Total", sum(q for _, q, _ in items), total, "100 %" if total else ""]
    return Chart(chart_id, title, caption, figure, Table([heading, "Units", "Amount", "Share"], rows, footer, frozenset({2})),
                 empty=not items)  # fmt: skip


def by_model(rows: list[dict]) -> Chart:
    items = [((row["model"] or "").upper() or OTHER, row["quantity"], row["amount"]) for row in rows]
    items.sort(key=lambda item: (item[0] == OTHER, -item[2]))
    return _breakdown("chart-model", "By model", "Image generation per model; other features together.", items, "Model")


def by_resolution(rows: list[dict]) -> Chart:
    sized = sorted((row for row in rows if row["resolution"]), key=lambda row: -row["amount"])
    items = [(row["resolution"].replace("x", "×"), row["quantity"], row["amount"]) for row in sized[:TOP_RESOLUTIONS]]
    rest = sized[TOP_RESOLUTIONS:]
    if rest:
        items.append((f"{len(rest)} other sizes", sum(r["quantity"] for r in rest), sum((r["amount"] for r in rest), Decimal(0))))
    other = [row for row in rows if not row["resolution"]]
    if other:
        items.append((OTHER, sum(r["quantity"] for r in other), sum((r["amount"] for r in other), Decimal(0))))
    return _breakdown(
        "chart-resolution", "By resolution", "Generated image sizes (width × height), largest spend first.", items, "Resolution"
    )


def by_steps(rows: list[dict]) -> Chart:
    stepped = sorted((row for row in rows if row["steps"]), key=lambda row: row["steps"])
    items = [(f"{row['steps']} steps", row["quantity"], row["amount"]) for row in stepped]
    other = [row for row in rows if not row["steps"]]
    if other:
        items.append((OTHER, sum(r["quantity"] for r in other), sum((r["amount"] for r in other), Decimal(0))))
    return _breakdown("chart-steps", "By steps", "Image generation by diffusion steps.", items, "Steps")


def by_api_key(rows: list[dict]) -> Chart:
    rows = sorted(rows, key=lambda row: -row["amount"])
    items = [(f"{row['api_key_name'] or '?'} ({row['api_key']})", row["quantity"], row["amount"]) for row in rows]
    names = [row["api_key_name"] or row["api_key"] for row in rows]
    return _breakdown("chart-key", "By API key", "Which key reported the usage.", items, "API key", chart_labels=names)

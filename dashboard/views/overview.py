"""The overview: the period's spend by day and by feature, the month's forecast and budgets, the
breakdowns by model, resolution, steps and API key."""

from __future__ import annotations

from datetime import date

from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from core.replicas import replica_reads
from workspaces.services import IssuedKey

from .. import charts, clock
from ..access import workspace_page
from ..forms import Period, PeriodForm, preset_period
from ..onboarding import first_request
from ..selectors.onboarding import onboarding_of
from ..selectors.overview import Overview, remembered_period
from ..selectors.overview import overview as overview_of
from ..services import overview_period_remember

PRESET_KEYS = ("this_month", "last_month", "last_3", "last_12")


@require_GET
@replica_reads
@workspace_page()
def overview(request):
    return render(request, "dashboard/overview.html", overview_context(request))


def overview_context(request, *, issued: IssuedKey | None = None) -> dict:
    """The overview's page context; `issued` is a key created from the "Get started" checklist,
    whose secret this one response shows (in the checklist's requests, ready to copy)."""
    today = clock.utc_today()
    form, period = _chosen_period(request, today)
    data = overview_of(request.access.workspace, period)
    chart_list = _charts(data, today)
    breakdowns = [
        charts.by_model(data.by_model.rows),
        charts.by_resolution(data.by_resolution.rows),
        charts.by_steps(data.by_steps.rows),
        charts.by_api_key(data.by_key.rows),
    ]
    return {
        "data": data,
        "form": form,
        "period": period,
        "presets": [(key, preset_period(key, today)) for key in PRESET_KEYS],
        "charts": chart_list,
        "breakdowns": breakdowns,
        "figures": {chart.id: chart.figure for chart in chart_list + breakdowns},
        "onboarding": onboarding_of(request.access.workspace),
        "first_request": first_request(issued, now=timezone.now()),
        "issued": issued,
    }


def _chosen_period(request, today: date) -> tuple[PeriodForm, Period]:
    """The period the URL asks for, remembered for the person when valid (invalid input never is);
    without one in the URL, the one they chose last, checked by the same form (this month, quietly,
    when it no longer holds). The form is the picker's, with the period's days filled in."""
    if "period" in request.GET:
        form = PeriodForm(request.GET, today=today)
        period = form.resolved()
        if form.is_valid():
            overview_period_remember(user=request.user, period=period)
        return form, period
    period = PeriodForm(remembered_period(request.user), today=today).resolved()
    form = PeriodForm(None, today=today)
    form.initial = {"period": period.key, "start": period.start, "end": period.end}
    return form, period


def _charts(data: Overview, today: date) -> list[charts.Chart]:
    """The daily spend by feature, and the cumulative spend with the forecast and the workspace's budgets."""
    workspace_budgets = [
        (f"Budget {b.budget.amount:,.2f} USD{' (hard limit)' if b.budget.hard_limit else ''}", b.budget.amount)
        for b in data.budgets
        if b.budget.api_key_id is None
    ]
    return [
        charts.daily_by_feature(data.daily.rows, data.period, anomalies=[charts.AnomalyMark.of(a) for a in data.anomalies]),
        charts.cumulative(
            data.daily.rows,
            data.period,
            today=today,
            forecast_spend=data.forecast.spend,
            forecast_total=data.forecast.forecast,
            budgets=workspace_budgets,
        ),
    ]

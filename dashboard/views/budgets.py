"""The budgets page: the budgets with this month's progress, the alerts' history, and creating,
editing, deleting a budget or sending it a test alert."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from budgets import evaluation as budget_evaluation
from budgets import services as budget_services

from ..access import MANAGE, back, workspace_page
from ..forms import BudgetForm
from ..selectors import budgets as selectors


def _budgets_page(request, form: BudgetForm, *, issued=(), status: int = 200):
    workspace = request.access.workspace
    response = render(
        request,
        "dashboard/budgets.html",
        {
            "budgets": selectors.budgets_progress(workspace),
            "alerts": selectors.alerts_history(workspace),
            "form": form,
            "issued": issued,
        },
        status=status,
    )
    if issued:
        response["Cache-Control"] = "no-store"  # webhook secrets are in this page, once
    return response


@require_GET
@workspace_page()
def budgets(request):
    return _budgets_page(request, BudgetForm(workspace=request.access.workspace))


@require_POST
@workspace_page(MANAGE)
def budget_create(request):
    form = BudgetForm(request.POST, workspace=request.access.workspace)
    if not form.is_valid():
        return _budgets_page(request, form, status=400)
    data = form.cleaned_data
    budget, issued = budget_services.budget_create(
        workspace=request.access.workspace, amount=data["amount"], thresholds=data["thresholds"],
        forecast_alerts=data["forecast_alerts"], hard_limit=data["hard_limit"], api_key=data["api_key"],
        email=data["email"], webhook_urls=data["webhooks"], anomaly_threshold=data["anomaly_threshold"],
    )  # fmt: skip
    messages.success(request, f"Budget of {budget.amount:,.2f} USD a month created.")
    return _budgets_page(request, BudgetForm(workspace=request.access.workspace), issued=issued)


def _budget(request, budget_id: int):
    budget = selectors.budget_of(request.access.workspace, budget_id)
    if budget is None:
        raise Http404("No such budget in this workspace.")
    return budget


def _budget_edit_page(request, budget, form: BudgetForm, *, issued=(), status: int = 200):
    response = render(request, "dashboard/budget_edit.html", {"budget": budget, "form": form, "issued": issued}, status=status)
    if issued:
        response["Cache-Control"] = "no-store"
    return response


def _budget_initial(budget) -> dict:
    return {
        "amount": budget.amount.normalize(),
        "api_key": budget.api_key,
        "thresholds": ", ".join(str(t) for t in budget.thresholds),
        "forecast_alerts": budget.forecast_alerts,
        "hard_limit": budget.hard_limit,
        "email": budget.email,
        "anomaly_threshold": None if budget.anomaly_threshold is None else budget.anomaly_threshold.normalize(),
        "webhooks": "\n".join(endpoint.url for endpoint in budget.webhooks.all()),
    }


@require_GET
@workspace_page(MANAGE)
def budget_edit(request, budget_id: int):
    budget = _budget(request, budget_id)
    return _budget_edit_page(request, budget, BudgetForm(initial=_budget_initial(budget), workspace=request.access.workspace))


@require_POST
@workspace_page(MANAGE)
def budget_update(request, budget_id: int):
    budget = _budget(request, budget_id)
    form = BudgetForm(request.POST, workspace=request.access.workspace)
    if not form.is_valid():
        return _budget_edit_page(request, budget, form, status=400)
    data = form.cleaned_data
    # A URL that stays keeps its endpoint (and its secret); new URLs get new secrets.
    specs = budget_services.WebhookSpec.of_urls(data["webhooks"])
    changes = {name: data[name] for name in ("amount", "thresholds", "forecast_alerts", "hard_limit", "api_key", "email", "anomaly_threshold")}
    budget, issued = budget_services.budget_update(budget=budget, changes=changes, webhooks_spec=specs)
    if issued:
        budget = _budget(request, budget.pk)
        return _budget_edit_page(request, budget, BudgetForm(initial=_budget_initial(budget), workspace=request.access.workspace), issued=issued)
    messages.success(request, "Budget saved.")
    return back(request, "dashboard:budgets")


@require_POST
@workspace_page(MANAGE)
def budget_delete(request, budget_id: int):
    budget = _budget(request, budget_id)
    budget_services.budget_delete(budget=budget)
    messages.success(request, "Budget deleted; its alerts stay in the history.")
    return back(request, "dashboard:budgets")


@require_POST
@workspace_page(MANAGE)
def budget_test_alert(request, budget_id: int):
    budget = _budget(request, budget_id)
    try:
        alert = budget_evaluation.alert_test_send(budget=budget)
    except budget_evaluation.TooManyTestAlerts as exc:
        messages.error(request, str(exc))
        return back(request, "dashboard:budgets")
    count = alert.deliveries.count()
    if count:
        messages.success(request, f"Test alert sent on {count} channel{'s' if count != 1 else ''}; its delivery is in the history below.")
    else:
        messages.info(request, "The budget has no channel: turn on e-mail or add a webhook.")
    return back(request, "dashboard:budgets")

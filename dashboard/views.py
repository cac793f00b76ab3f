"""The dashboard's pages. Thin: parse the request, call a selector or a service, render.

Every page is of one workspace (dashboard.access.workspace_page): `?workspace=<slug>` names it,
members of other workspaces get a 404, and pages that change something check the role.
"""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.templatetags.static import static
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from billing.cards import payment_card
from billing.models import Statement
from billing.payment_report import State as ChargeState
from billing.payments import statement_charge
from billing.stripe_api import PaymentsNotConfigured, payments_configured
from budgets import services as budget_services
from core.money import CENT
from workspaces.models import ApiKey, Membership
from workspaces.services import (
    MembershipError,
    api_key_create,
    api_key_revoke,
    member_remove,
    member_role_set,
)

from . import charts, selectors
from .access import MANAGE, OWNER, workspace_page
from .csv_export import csv_lines, money
from .forms import (
    ApiKeyCreateForm,
    BudgetForm,
    MemberAddForm,
    MemberRoleForm,
    PeriodForm,
    UsageFilterForm,
    preset_period,
)
from .services import member_invite


def favicon(request):
    """/favicon.ico, which browsers ask for on pages that name no icon (the admin, the API docs)."""
    return redirect(static("img/favicon.svg"), permanent=True)


def _back(request, name: str, *args) -> HttpResponse:
    return redirect(request.access.url(name, *args))


# --- Overview ----------------------------------------------------------------------------------


@require_GET
@workspace_page()
def overview(request):
    today = selectors.utc_today()
    form = PeriodForm(request.GET if "period" in request.GET else None, today=today)
    period = form.resolved()
    if not form.is_bound:
        form = PeriodForm(None, today=today)
        form.initial = {"period": period.key, "start": period.start, "end": period.end}
    data = selectors.overview(request.access.workspace, period)
    workspace_budgets = [
        (f"Budget {b.budget.amount:,.2f} USD{' (hard limit)' if b.budget.hard_limit else ''}", b.budget.amount)
        for b in data.budgets
        if b.budget.api_key_id is None
    ]
    chart_list = [
        charts.daily_by_feature(data.daily.rows, period),
        charts.cumulative(
            data.daily.rows,
            period,
            today=today,
            forecast_spend=data.forecast.spend,
            forecast_total=data.forecast.forecast,
            budgets=workspace_budgets,
        ),
    ]
    breakdowns = [
        charts.by_model(data.by_model.rows),
        charts.by_resolution(data.by_resolution.rows),
        charts.by_steps(data.by_steps.rows),
        charts.by_api_key(data.by_key.rows),
    ]
    return render(
        request,
        "dashboard/overview.html",
        {
            "data": data,
            "form": form,
            "period": period,
            "presets": [(key, preset_period(key, today)) for key in ("this_month", "last_month", "last_3", "last_12")],
            "charts": chart_list,
            "breakdowns": breakdowns,
            "figures": {chart.id: chart.figure for chart in chart_list + breakdowns},
        },
    )


# --- Usage -------------------------------------------------------------------------------------


def _usage_filters(request) -> tuple[UsageFilterForm, dict]:
    form = UsageFilterForm(request.GET, workspace=request.access.workspace, today=selectors.utc_today())
    return form, form.filters()


def _filter_query(request, filters: dict) -> dict:
    """The filters as they appear in the page's links (with the workspace), for the template."""
    values = {
        "start": filters["start"].isoformat(),
        "end": filters["end"].isoformat(),
        "feature": filters["feature"],
        "model": filters["model"],
        "api_key": filters["api_key_id"] or "",
    }
    return {"filters": values, "query": urlencode({"workspace": request.access.workspace.slug, **values})}


@require_GET
@workspace_page()
def usage_events(request):
    form, filters = _usage_filters(request)
    cursor = form.cursor()
    page = selectors.events_page(request.access.workspace, filters, before=cursor)
    return render(
        request,
        "dashboard/usage.html",
        {
            "tab": "events",
            "form": form,
            **_filter_query(request, filters),
            "page": page,
            "first_page": cursor is None,
            "hint": selectors.export_hint(request.access.workspace, filters),
        },
    )


@require_GET
@workspace_page()
def usage_rollups(request):
    form, filters = _usage_filters(request)
    paginator = Paginator(selectors.rollups_queryset(request.access.workspace, filters), 50)
    return render(
        request,
        "dashboard/usage.html",
        {
            "tab": "rollups",
            "form": form,
            **_filter_query(request, filters),
            "rollups": paginator.get_page(form.page_number()),
            "hint": selectors.export_hint(request.access.workspace, filters),
        },
    )


@require_GET
@workspace_page()
def usage_export(request):
    """CSV of events (or of daily rollups) of any range, streamed: rows are read in chunks
    through a server-side cursor and written as they come, so memory stays flat. Every parameter
    is checked before the first byte: a bad one is a 400 naming it, never this month instead."""
    form, filters = _usage_filters(request)
    if not form.is_valid():
        problems = "\n".join(form.problems())
        return HttpResponse(f"Nothing exported: {problems}\n", status=400, content_type="text/plain; charset=utf-8")
    workspace = request.access.workspace
    kind = form.export_kind()
    hint = selectors.export_hint(workspace, filters)
    rows = (selectors.rollups_csv_rows if kind == "rollups" else selectors.events_csv_rows)(workspace, filters)
    response = StreamingHttpResponse(csv_lines(rows), content_type="text/csv; charset=utf-8")
    name = f"meterboard-{workspace.slug}-{kind}-{filters['start']:%Y%m%d}-{filters['end']:%Y%m%d}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    # Rows to expect (from the rollups' counts), for a client's progress; no Content-Length when streaming.
    response["X-Expected-Rows"] = str(hint.rollups if kind == "rollups" else hint.events)
    response["Cache-Control"] = "no-store"
    return response


# --- Statements -----------------------------------------------------------------------------------


def _statement(request, statement_id: int) -> Statement:
    statement = selectors.statement_of(request.access.workspace, statement_id)
    if statement is None:
        raise Http404("No such statement in this workspace.")
    return statement


@require_GET
@workspace_page()
def statements(request):
    workspace = request.access.workspace
    return render(
        request,
        "dashboard/statements.html",
        {"statements": selectors.statements_of(workspace), "preview": selectors.statement_preview(workspace, now=selectors.clock())},
    )


@require_GET
@workspace_page()
def statement_preview(request):
    """This month's draft, and the pending statement of every earlier month not closed yet."""
    preview = selectors.statement_preview(request.access.workspace, now=selectors.clock())
    return render(request, "dashboard/statement_preview.html", {"preview": preview, "draft": preview.current})


@require_GET
@workspace_page()
def statement_detail(request, statement_id: int):
    statement = _statement(request, statement_id)
    return render(
        request,
        "dashboard/statement.html",
        {
            "statement": statement,
            "summary": selectors.lines_summary(statement.lines.all()),
            "can_retry": _can_retry(request, statement),
            "failure": selectors.last_attempt_error(statement),
        },
    )


@require_GET
@workspace_page()
def statement_print(request, statement_id: int):
    return render(request, "dashboard/statement_print.html", {"statement": _statement(request, statement_id)})


@require_GET
@workspace_page()
def statement_csv(request, statement_id: int):
    statement = _statement(request, statement_id)
    # Text as str (neutralised when it could be a formula), amounts as Decimal (written as numbers).
    rows = [("position", "kind", "description", "quantity", "unit_price_usd", "amount_usd")]
    rows += [(line.position, line.kind, line.description, line.quantity, money(line.unit_price), money(line.amount))
             for line in statement.lines.all()]  # fmt: skip
    rows += [("", "total", "Total", "", "", money(statement.total)),
             ("", "amount_due", "Amount due (USD, rounded to cents)", "", "",
              money(Decimal(statement.amount_due_cents).scaleb(-2), CENT))]  # fmt: skip
    response = HttpResponse("".join(csv_lines(rows)), content_type="text/csv; charset=utf-8")
    name = f"meterboard-{request.access.workspace.slug}-statement-{statement.period:%Y-%m}-{statement.pk}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _can_retry(request, statement: Statement) -> bool:
    return request.access.can_manage and statement.status == Statement.Status.PAYMENT_FAILED and statement.amount_due_cents > 0


@require_POST
@workspace_page(MANAGE)
def statement_retry(request, statement_id: int):
    statement = _statement(request, statement_id)
    if not _can_retry(request, statement):
        messages.info(request, "This statement has no failed payment to retry.")
        return _back(request, "dashboard:statement", statement.pk)
    try:
        charge = statement_charge(statement, retry_now=True)
    except PaymentsNotConfigured:
        messages.error(request, "Payments are not configured on this server.")
    else:
        attempt = charge.attempt
        if charge.state == ChargeState.PAID:
            messages.success(request, f"Paid: attempt {attempt.number} succeeded.")
        elif charge.state in (ChargeState.DECLINED, ChargeState.NO_CARD):
            messages.error(request, f"The payment failed again: {attempt.error}")
        elif charge.state == ChargeState.NOT_SENT:
            messages.warning(request, "Stripe cannot be reached right now: the payment is sent automatically once it answers.")
        elif charge.state in (ChargeState.PENDING, ChargeState.IN_PROGRESS):
            messages.info(request, "The payment is being processed; this page shows the outcome once Stripe reports it.")
        else:
            messages.info(request, "Nothing to charge: the statement is paid or has nothing due.")
    return _back(request, "dashboard:statement", statement.pk)


# --- API keys -----------------------------------------------------------------------------------


def _keys_page(request, form: ApiKeyCreateForm, *, issued=None, status: int = 200):
    response = render(
        request,
        "dashboard/keys.html",
        {"keys": selectors.api_keys_of(request.access.workspace), "form": form, "issued": issued},
        status=status,
    )
    if issued is not None:
        response["Cache-Control"] = "no-store"  # the secret is in this page, once
    return response


@require_GET
@workspace_page()
def keys(request):
    return _keys_page(request, ApiKeyCreateForm())


@require_POST
@workspace_page(MANAGE)
def key_create(request):
    form = ApiKeyCreateForm(request.POST)
    if not form.is_valid():
        return _keys_page(request, form, status=400)
    issued = api_key_create(workspace=request.access.workspace, name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"])
    return _keys_page(request, ApiKeyCreateForm(), issued=issued)


@require_POST
@workspace_page(MANAGE)
def key_revoke(request, key_id: int):
    key = get_object_or_404(ApiKey, pk=key_id, workspace=request.access.workspace)
    api_key_revoke(api_key=key)
    messages.success(request, f"Revoked “{key.name}” ({key.display_prefix}): it is refused from its next request on.")
    return _back(request, "dashboard:keys")


# --- Members ------------------------------------------------------------------------------------


def _members_page(request, form: MemberAddForm, status: int = 200):
    return render(
        request,
        "dashboard/members.html",
        {"members": selectors.members_of(request.access.workspace), "form": form, "roles": Membership.Role.choices},
        status=status,
    )


@require_GET
@workspace_page()
def members(request):
    return _members_page(request, MemberAddForm())


@require_POST
@workspace_page(OWNER)
def member_add(request):
    form = MemberAddForm(request.POST)
    if not form.is_valid():
        return _members_page(request, form, status=400)
    try:
        added = member_invite(
            workspace=request.access.workspace, email=form.cleaned_data["email"], role=form.cleaned_data["role"], invited_by=request.user
        )
    except MembershipError as exc:
        form.add_error("email", str(exc))
        return _members_page(request, form, status=400)
    email = added.membership.user.email
    messages.success(
        request,
        f"Added {email}. We e-mailed them a link to choose a password." if added.new_user else f"Added {email}; we let them know.",
    )
    return _back(request, "dashboard:members")


def _membership(request, membership_id: int) -> Membership:
    return get_object_or_404(Membership.objects.select_related("user"), pk=membership_id, workspace=request.access.workspace)


@require_POST
@workspace_page(OWNER)
def member_role(request, membership_id: int):
    membership = _membership(request, membership_id)
    form = MemberRoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a role: owner, admin or viewer.")
        return _back(request, "dashboard:members")
    try:
        member_role_set(membership=membership, role=form.cleaned_data["role"])
    except MembershipError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{membership.user.email} is now {membership.get_role_display().lower()}.")
    return _back(request, "dashboard:members")


@require_POST
@workspace_page(OWNER)
def member_delete(request, membership_id: int):
    membership = _membership(request, membership_id)
    try:
        member_remove(membership=membership)
    except MembershipError as exc:
        messages.error(request, str(exc))
        return _back(request, "dashboard:members")
    messages.success(request, f"Removed {membership.user.email} from the workspace.")
    if membership.user_id == request.user.pk:
        return redirect("dashboard:overview")
    return _back(request, "dashboard:members")


# --- Payment method --------------------------------------------------------------------------------


@never_cache
@require_GET
@workspace_page()
def payment(request):
    workspace = request.access.workspace
    return render(
        request,
        "dashboard/payment.html",
        {
            "card": payment_card(workspace),
            "configured": payments_configured() and bool(settings.STRIPE_PUBLISHABLE_KEY),
            "stripe_js_url": settings.STRIPE_JS_URL,
            "stripe_publishable_key": settings.STRIPE_PUBLISHABLE_KEY,
            "failed": Statement.objects.filter(workspace=workspace, status=Statement.Status.PAYMENT_FAILED).order_by("period"),
        },
    )


# --- Staff -----------------------------------------------------------------------------------------


@require_GET
@staff_member_required
def staff(request):
    now = selectors.clock()
    return render(
        request,
        "dashboard/staff.html",
        {"data": selectors.staff_overview(now=now), "now": now, "close_day": settings.BILLING_CLOSE_DAY},
    )


# --- Budgets ------------------------------------------------------------------------------------


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
        email=data["email"], webhook_urls=data["webhooks"],
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
    kept = {endpoint.url: endpoint.pk for endpoint in budget.webhooks.all()}
    specs = [budget_services.WebhookSpec(url=url, id=kept.get(url)) for url in data["webhooks"]]
    changes = {name: data[name] for name in ("amount", "thresholds", "forecast_alerts", "hard_limit", "api_key", "email")}
    budget, issued = budget_services.budget_update(budget=budget, changes=changes, webhooks_spec=specs)
    if issued:
        budget = _budget(request, budget.pk)
        return _budget_edit_page(request, budget, BudgetForm(initial=_budget_initial(budget), workspace=request.access.workspace), issued=issued)
    messages.success(request, "Budget saved.")
    return _back(request, "dashboard:budgets")


@require_POST
@workspace_page(MANAGE)
def budget_delete(request, budget_id: int):
    budget = _budget(request, budget_id)
    budget_services.budget_delete(budget=budget)
    messages.success(request, "Budget deleted; its alerts stay in the history.")
    return _back(request, "dashboard:budgets")


@require_POST
@workspace_page(MANAGE)
def budget_test_alert(request, budget_id: int):
    budget = _budget(request, budget_id)
    try:
        alert = budget_services.alert_test_send(budget=budget)
    except budget_services.TooManyTestAlerts as exc:
        messages.error(request, str(exc))
        return _back(request, "dashboard:budgets")
    count = alert.deliveries.count()
    if count:
        messages.success(request, f"Test alert sent on {count} channel{'s' if count != 1 else ''}; its delivery is in the history below.")
    else:
        messages.info(request, "The budget has no channel: turn on e-mail or add a webhook.")
    return _back(request, "dashboard:budgets")

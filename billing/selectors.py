"""Reads for billing: the inputs of a statement (plans, coupons, the usage it bills, the statements
before it). Selectors never write."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal

from django.db.models import Min, OuterRef, Q, Subquery, Sum
from django.db.models.functions import TruncMonth

from core.periods import month_start, next_month, period_bounds
from usage.models import UsageEvent, received_since
from usage.validation import MAX_FUTURE
from workspaces.models import Workspace

from . import statement as engine
from .models import BalanceAdjustment, BillingProfile, Discount, Plan, PlanAssignment, Statement, TaxRate

# --- Inputs of a statement ---------------------------------------------------------------------
# Which plan prices a month: the plan in force at the period's last instant prices the whole month
# (rates, tiers, savings plan, fees, free tier), late usage included (docs/money-flow.md).

DEFAULT_PLAN_NAME = "Pay as you go"
LIVE = ~Q(status__in=[Statement.Status.VOID, Statement.Status.DRAFT])
_GROUP_FIELDS = ("feature", "model", "steps", "width", "height", "composition_control", "spot", "unit_price")


def default_plan() -> Plan:
    """The plan of workspaces with no assignment. A read: when none is marked default (migration
    0004 creates "Pay as you go"), an unsaved plan with the model's defaults stands in for it."""
    return (
        Plan.objects.filter(is_default=True).first()
        or Plan.objects.filter(name=DEFAULT_PLAN_NAME).first()
        or Plan(name=DEFAULT_PLAN_NAME, is_default=True)
    )


def plans_by_workspace(workspace_ids: list[int], period: date) -> dict[int, Plan]:
    """The plan in force at the period's last instant, per workspace (see the module docstring)."""
    _, end = period_bounds(period)
    chosen: dict[int, int] = {}
    for workspace_id, plan_id in (
        PlanAssignment.objects.filter(workspace_id__in=workspace_ids, effective_from__lt=end)
        .order_by("workspace_id", "-effective_from")
        .values_list("workspace_id", "plan_id")
    ):
        chosen.setdefault(workspace_id, plan_id)
    fallback = default_plan()
    plans = {
        plan.pk: plan
        for plan in Plan.objects.filter(pk__in={*chosen.values(), fallback.pk}).prefetch_related("rates", "volume_tiers")
    }
    plans[fallback.pk] = plans.get(fallback.pk, fallback)
    return {workspace_id: plans[chosen.get(workspace_id, fallback.pk)] for workspace_id in workspace_ids}


def plan_for_period(workspace: Workspace, period: date) -> Plan:
    return plans_by_workspace([workspace.pk], period)[workspace.pk]


def plan_terms(plan: Plan) -> engine.PlanTerms:
    return engine.PlanTerms(
        name=plan.name,
        free_tier_credit=plan.free_tier_credit,
        custom_rates={
            (rate.feature, rate.model): engine.CustomRate(rate.percent_of_list, rate.unit_price)
            for rate in (plan.rates.all() if plan.pk else ())
        },
        spot_discount_percent=plan.spot_discount_percent,
        volume_mode=plan.volume_mode,
        volume_tiers=tuple(engine.Tier(t.up_to, t.discount_percent) for t in (plan.volume_tiers.all() if plan.pk else ())),
        savings_commitment=plan.savings_commitment,
        savings_discount_percent=plan.savings_discount_percent,
        reserved_fee=plan.reserved_fee,
        reserved_included_usage=plan.reserved_included_usage,
    )


def discount_applies(discount: Discount, period: date) -> bool:
    first = month_start(discount.starts_on)
    if period < first or (discount.ends_on and period > discount.ends_on):
        return False
    if discount.duration == Discount.Duration.ONCE:
        return period == first
    if discount.duration == Discount.Duration.REPEATING:
        months = (period.year - first.year) * 12 + period.month - first.month
        return months < (discount.duration_months or 0)
    return True


def coupons_by_workspace(workspace_ids: list[int], period: date) -> dict[int, list[engine.Coupon]]:
    coupons: dict[int, list[engine.Coupon]] = defaultdict(list)
    for d in Discount.objects.filter(workspace_id__in=workspace_ids).order_by("created_at", "pk"):
        if discount_applies(d, period):
            coupons[d.workspace_id].append(engine.Coupon(d.name, d.kind, d.value, frozenset(d.features or ())))
    return coupons


def taxes_by_workspace(workspace_ids: list[int]) -> dict[int, engine.Tax]:
    """The tax each workspace is charged: its own rate, else its billing profile's country's, else
    none (engine.NO_TAX). Three queries however many workspaces."""
    own = {rate.workspace_id: rate for rate in TaxRate.objects.filter(workspace_id__in=workspace_ids)}
    countries = dict(
        BillingProfile.objects.filter(workspace_id__in=workspace_ids).exclude(country="").values_list("workspace_id", "country")
    )
    by_country = {rate.country: rate for rate in TaxRate.objects.filter(country__in=set(countries.values()))} if countries else {}
    taxes = {}
    for workspace_id in workspace_ids:
        rate = own.get(workspace_id) or by_country.get(countries.get(workspace_id, ""))
        taxes[workspace_id] = engine.NO_TAX if rate is None else engine.Tax(rate.name, rate.percent)
    return taxes


def _group(row: dict, late_for: date | None) -> engine.UsageGroup:
    return engine.UsageGroup(
        feature=row["feature"], model=row["model"], steps=row["steps"] or 0, width=row["width"] or 0,
        height=row["height"] or 0, composition_control=row["composition_control"], spot=row["spot"],
        list_unit_price=row["unit_price"], quantity=int(row["q"]), late_for=late_for,
    )


@dataclass(frozen=True)
class Prior:
    """What a workspace's previous live statement billed (everything before it included): the
    events that occurred before `period`'s end and were received by `cutoff`; and the balance it
    carried forward. No prior statement: nothing billed yet."""

    period: date | None = None
    cutoff: datetime | None = None
    carried: Decimal = engine.ZERO

    @property
    def end(self) -> datetime | None:
        return period_bounds(self.period)[1] if self.period else None

    @classmethod
    def of(cls, statement: Statement | None) -> Prior:
        if statement is None:
            return cls()
        return cls(statement.period, statement.usage_cutoff, statement.carried_forward)


NO_PRIOR = Prior()


def unbilled_q(prior: Prior, *, before: datetime) -> Q:
    """Events that occurred before `before` and that no statement up to `prior` bills.

    The live statements of a workspace, in period order, each bill the events that occurred
    before their period's end and were received by their cutoff, less what the ones before them
    billed. So what they bill together is exactly "occurred before the last one's end and received
    by its cutoff", and what is left is this: no time window can drop an event between two
    statements, whichever months were skipped."""
    q = Q(occurred_at__lt=before)
    if prior.period is not None:
        q &= Q(occurred_at__gte=prior.end) | Q(received_at__gt=prior.cutoff)
        # Implied by the line above (an event occurring at or after the end arrived at most
        # MAX_FUTURE before it): said so that PostgreSQL skips the partitions of earlier months.
        q &= received_since(min(prior.end, prior.cutoff + MAX_FUTURE))
    return q


def usage_by_workspace(
    workspace_ids: list[int], period: date, *, cutoffs: dict[int, datetime], priors: dict[int, Prior]
) -> dict[int, list[engine.UsageGroup]]:
    """Per workspace: what its statement for `period` bills, received by its cutoff and not billed
    by its prior statement (see unbilled_q), as usage (occurred in the period) and late usage
    (occurred before it, per month). One GROUP BY each for the whole chunk of workspaces."""
    start, end = period_bounds(period)
    usage: dict[int, list[engine.UsageGroup]] = defaultdict(list)
    groups: dict[tuple[Prior, datetime], list[int]] = defaultdict(list)
    for workspace_id in workspace_ids:
        groups[(priors.get(workspace_id, NO_PRIOR), cutoffs[workspace_id])].append(workspace_id)
    received, late = Q(pk__in=[]), Q(pk__in=[])
    for (prior, cutoff), ids in groups.items():
        received |= Q(workspace_id__in=ids, received_at__lte=cutoff)
        late |= Q(workspace_id__in=ids, received_at__lte=cutoff) & unbilled_q(prior, before=start)
    # A prior statement is for an earlier month, so the period's own events are all unbilled.
    for row in (
        UsageEvent.objects.filter(received, received_since(start), occurred_at__gte=start, occurred_at__lt=end)
        .values("workspace_id", *_GROUP_FIELDS)
        .annotate(q=Sum("quantity"))
        .order_by()
    ):
        usage[row["workspace_id"]].append(_group(row, None))
    for row in (
        UsageEvent.objects.filter(late)
        .annotate(month=TruncMonth("occurred_at", tzinfo=timezone.utc))
        .values("workspace_id", "month", *_GROUP_FIELDS)
        .annotate(q=Sum("quantity"))
        .order_by()
    ):
        usage[row["workspace_id"]].append(_group(row, row["month"].date()))
    return usage


def priors_of(workspace_ids: list[int], period: date) -> dict[int, Prior]:
    """The last live statement before `period`, per workspace."""
    priors: dict[int, Prior] = {}
    for statement in (
        Statement.objects.filter(LIVE, workspace_id__in=workspace_ids, period__lt=period)
        .only("workspace_id", "period", "usage_cutoff", "carried_forward")
        .order_by("workspace_id", "-period")
    ):
        priors.setdefault(statement.workspace_id, Prior.of(statement))
    return priors


def pending_adjustments(workspace_ids: list[int]) -> dict[int, list[BalanceAdjustment]]:
    pending: dict[int, list[BalanceAdjustment]] = defaultdict(list)
    for adjustment in BalanceAdjustment.objects.filter(workspace_id__in=workspace_ids, applied_to__isnull=True):
        pending[adjustment.workspace_id].append(adjustment)
    return pending


def last_live(workspace_ids: list[int] | None) -> dict[int, Prior]:
    """Every workspace's last live statement (of any month)."""
    last = Statement.objects.filter(LIVE, workspace=OuterRef("pk")).order_by("-period")
    workspaces = Workspace.objects.all() if workspace_ids is None else Workspace.objects.filter(pk__in=workspace_ids)
    rows = workspaces.annotate(
        last_period=Subquery(last.values("period")[:1]),
        last_cutoff=Subquery(last.values("usage_cutoff")[:1]),
        last_carried=Subquery(last.values("carried_forward")[:1]),
    ).filter(last_period__isnull=False).values_list("pk", "last_period", "last_cutoff", "last_carried")
    return {pk: Prior(period, cutoff, carried or engine.ZERO) for pk, period, cutoff, carried in rows}


def first_open_months(workspace_ids: list[int] | None, period: date, *, now: datetime) -> dict[int, date]:
    """The workspaces with something to bill up to `period` and no live statement for it or a
    later month, each with the first month still to close (the month after its last live
    statement, or the first month with usage or fees when it has none).

    Something to bill: an unbilled event that occurred before the period's end (unbilled_q),
    a plan with fees, a carried balance or an adjustment not yet applied."""
    _, end = period_bounds(period)
    last = last_live(workspace_ids)
    scope = Q() if workspace_ids is None else Q(workspace_id__in=workspace_ids)
    first: dict[int, date] = {}

    def add(workspace_id: int, month: date) -> None:
        first[workspace_id] = min(month, first.get(workspace_id, month))

    by_prior: dict[Prior, list[int]] = defaultdict(list)
    for workspace_id, prior in last.items():
        if prior.period < period:
            by_prior[prior].append(workspace_id)
    unbilled = Q(pk__in=[])
    for prior, ids in by_prior.items():
        unbilled |= Q(workspace_id__in=ids) & unbilled_q(prior, before=end)
    # Nothing arrives after `now`: said so that PostgreSQL skips the partitions made ahead.
    unbilled &= Q(received_at__lte=now)
    for workspace_id in UsageEvent.objects.filter(scope, unbilled).values_list("workspace_id", flat=True).distinct().order_by():
        add(workspace_id, next_month(last[workspace_id].period))
    # The workspaces never billed first, then their events by the (workspace, time) index: an
    # anti-join on the events would read every row of every month's partition at each close.
    never = Workspace.objects.exclude(pk__in=Statement.objects.filter(LIVE).values("workspace_id"))
    never_ids = list((never if workspace_ids is None else never.filter(pk__in=workspace_ids)).values_list("pk", flat=True))
    for chunk_start in range(0, len(never_ids), 1_000):
        for workspace_id, occurred in (
            UsageEvent.objects.filter(workspace_id__in=never_ids[chunk_start : chunk_start + 1_000], occurred_at__lt=end)
            .values("workspace_id").annotate(first=Min("occurred_at")).order_by().values_list("workspace_id", "first")
        ):
            add(workspace_id, month_start(occurred.astimezone(timezone.utc).date()))
    for workspace_id, starts in (
        PlanAssignment.objects.filter(scope, effective_from__lt=end)
        .filter(Q(plan__reserved_fee__gt=0) | Q(plan__savings_commitment__gt=0))
        .values("workspace_id").annotate(first=Min("effective_from")).order_by().values_list("workspace_id", "first")
    ):
        prior = last.get(workspace_id)
        if prior is None:
            add(workspace_id, month_start(starts.astimezone(timezone.utc).date()))
        elif prior.period < period:
            add(workspace_id, next_month(prior.period))
    owed = set(BalanceAdjustment.objects.filter(scope, applied_to__isnull=True).values_list("workspace_id", flat=True))
    for workspace_id, prior in last.items():
        if prior.period < period and (prior.carried > 0 or workspace_id in owed):
            add(workspace_id, next_month(prior.period))
    return first

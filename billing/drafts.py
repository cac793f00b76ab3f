"""Drafts: what closing a month would produce, computed and not stored (the preview, and what the
close and the reissue store).

Which events a statement bills (docs/money-flow.md). A statement has a cutoff, the
close time less CUTOFF_LAG (longer than any ingestion transaction, so an event whose transaction
commits after the close read its `received_at` is after the cutoff, never lost). A workspace's
live statements, in period order, each bill the events that occurred before their period's end and
were received by their cutoff, less those the statements before them billed:
- usage: events that occurred in the period [1st 00:00 UTC, next 1st);
- late usage: events that occurred before the period, per month, that no earlier statement billed:
  received after the previous statement's cutoff, or occurring after the previous statement's
  month (months that were never closed).
So an event is billed by the first live statement whose month ends after it occurred and whose
cutoff is at or after its receipt: exactly one, whatever months were skipped. Each statement stores
its prior statement's month and cutoff, so a reissue bills the very same events (E1 in the README).

Which plan prices a month: the plan in force at the period's last instant prices the whole month
(rates, tiers, savings plan, fees, free tier), late usage included: late usage keeps its stored list
price (the price-book version in force when it occurred) and takes the terms of the statement that
bills it. A plan assigned from mid-month therefore applies to that whole month; one assigned from
the 1st of the next month does not.

Months close in order (E6): closing a month first closes, oldest first, every earlier month still
open for the workspace (after its last live statement), so each month's fees, commitment and free
tier are applied once (E2). A month cannot be closed once a later month has a live statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from django.utils import timezone as dj_timezone

from core.periods import month_start, months_between, period_bounds
from workspaces.models import Workspace

from . import statement as engine
from .credits import credits_available
from .errors import CloseRefused
from .models import BalanceAdjustment, Plan
from .selectors import (
    NO_PRIOR,
    Prior,
    coupons_by_workspace,
    first_open_months,
    pending_adjustments,
    plan_terms,
    plans_by_workspace,
    priors_of,
    taxes_by_workspace,
    usage_by_workspace,
)

# A closing month counts what was received up to this long before the close: longer than any
# ingestion transaction, so an event committed after the close read is after the cutoff, never lost.
CUTOFF_LAG = timedelta(minutes=5)


@dataclass(frozen=True)
class Draft:
    """A statement computed but not stored: the preview, or what a close is about to store."""

    workspace: Workspace
    period: date
    plan: Plan
    cutoff: datetime
    built: engine.Built
    prior: Prior = NO_PRIOR
    adjustments: tuple[BalanceAdjustment, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.built.lines

    @property
    def is_pending(self) -> bool:
        """A month that is over but not closed yet (the preview shows it beside the current one)."""
        return period_bounds(self.period)[1] <= self.cutoff

    def as_prior(self) -> Prior:
        return Prior(self.period, self.cutoff, self.built.carried_forward)


def _cutoff(period: date, now: datetime) -> datetime:
    """A month that is not over yet (the preview) counts everything received so far: its events
    cannot become late. A closing month stops CUTOFF_LAG before now."""
    return now if period_bounds(period)[1] > now else now - CUTOFF_LAG


def statement_drafts(
    workspaces: list[Workspace],
    period: date,
    *,
    now: datetime | None = None,
    cutoff: datetime | None = None,
    priors: dict[int, Prior] | None = None,
    adjustments: dict[int, list[BalanceAdjustment]] | None = None,
    credits: dict[int, engine.Decimal] | None = None,
) -> dict[int, Draft]:
    """What closing `period` now would produce for each workspace, with a fixed number of
    queries however many workspaces there are. The preview, the close and the reissue use it;
    `priors` and `adjustments` default to what is stored (the last live statement before the
    period, the adjustments no statement has applied yet); `credits` to the prepaid credits usable
    at `now` (billing.credits)."""
    now = now or dj_timezone.now()
    cutoff = cutoff or _cutoff(period, now)
    ids = [workspace.pk for workspace in workspaces]
    priors = priors_of(ids, period) if priors is None else priors
    adjustments = pending_adjustments(ids) if adjustments is None else adjustments
    cutoffs = {}
    for workspace in workspaces:
        prior = priors.get(workspace.pk, NO_PRIOR)
        cutoffs[workspace.pk] = cutoff
        if prior.cutoff is None or prior.cutoff <= cutoff:
            continue
        if prior.cutoff > now:
            raise CloseRefused(
                f"{workspace.slug}: {prior.period:%Y-%m} was closed with a cutoff ({prior.cutoff:%Y-%m-%d %H:%M:%S}Z) "
                f"later than now ({now:%Y-%m-%d %H:%M:%S}Z): a clock was ahead. Check the servers' clocks and run the "
                f"close again after {prior.cutoff:%Y-%m-%d %H:%M:%S}Z."
            )
        # A close that started a little later finished first: count what it counted. Safe, since
        # it read the events after its cutoff plus the lag, and this close reads after it.
        cutoffs[workspace.pk] = prior.cutoff
    plans = plans_by_workspace(ids, period)
    terms = {plan.pk: plan_terms(plan) for plan in {p.pk: p for p in plans.values()}.values()}
    coupons = coupons_by_workspace(ids, period)
    usage = usage_by_workspace(ids, period, cutoffs=cutoffs, priors=priors)
    taxes = taxes_by_workspace(ids)
    credits = credits_available(ids, now=now) if credits is None else credits
    drafts = {}
    for workspace in workspaces:
        prior = priors.get(workspace.pk, NO_PRIOR)
        plan = plans[workspace.pk]
        owed = tuple(adjustments.get(workspace.pk, ()))
        built = engine.build(
            usage=usage.get(workspace.pk, []),
            plan=terms[plan.pk],
            coupons=coupons.get(workspace.pk, []),
            carried_balance=prior.carried,
            adjustments=[engine.Adjustment(a.description, a.amount) for a in owed],
            tax=taxes[workspace.pk],
            credits_available=credits.get(workspace.pk, engine.ZERO),
        )
        drafts[workspace.pk] = Draft(workspace, period, plan, cutoffs[workspace.pk], built, prior, owed)
    return drafts


def statement_draft(
    workspace: Workspace, period: date, *, now: datetime | None = None, cutoff: datetime | None = None
) -> Draft:
    """What closing `period` now would produce for one workspace (E4): chained after every earlier
    month still open, which the close would close first. With `cutoff`: that month alone, after
    its stored prior statement."""
    if cutoff is not None:
        return statement_drafts([workspace], period, now=now, cutoff=cutoff)[workspace.pk]
    return _draft_chain(workspace, period, now=now or dj_timezone.now())[-1]


def _draft_chain(workspace: Workspace, period: date, *, now: datetime, cutoff: datetime | None = None) -> list[Draft]:
    """Drafts of every month still open for the workspace up to `period`, oldest first, chained as
    closing `period` at `now` would chain them: each bills only what the ones before it do not.
    Months with nothing to bill are left out; `period` is always last. `cutoff`: count what was
    received up to then in every month (default: as the close would, see _cutoff)."""
    first = first_open_months([workspace.pk], period, now=now).get(workspace.pk, period)
    prior = priors_of([workspace.pk], period).get(workspace.pk, NO_PRIOR)
    owed = pending_adjustments([workspace.pk]).get(workspace.pk, [])
    credits = credits_available([workspace.pk], now=now).get(workspace.pk, engine.ZERO)
    if cutoff is not None and prior.cutoff is not None and prior.cutoff > cutoff:
        cutoff = prior.cutoff  # a preview behind the last close's clock: count what that close counted
    drafts: list[Draft] = []
    for month in months_between(min(first, period), period):
        draft = statement_drafts(
            [workspace], month, now=now, cutoff=cutoff, priors={workspace.pk: prior}, adjustments={workspace.pk: owed},
            credits={workspace.pk: credits},
        )[workspace.pk]
        if draft.is_empty and month != period:
            continue
        drafts.append(draft)
        prior = draft.as_prior()
        owed = credit_left_over(draft)
        credits -= draft.built.credits_applied  # what the earlier month's close consumes first
    return drafts


def statement_preview(workspace: Workspace, *, now: datetime | None = None) -> list[Draft]:
    """The current month's draft, preceded by a pending draft of every earlier month that is over
    but not closed yet (between the 1st and the close), oldest first.

    Each counts everything received so far, chained as the close chains them: a pending month bills
    its own usage, so the current month's draft never shows it again (E4). A close at `now` would
    leave out what arrived in its last CUTOFF_LAG (in-flight ingestion); the preview at `now` is
    exactly the close at `now + CUTOFF_LAG` when nothing arrives in between."""
    now = now or dj_timezone.now()
    return _draft_chain(workspace, month_start(now.astimezone(timezone.utc).date()), now=now, cutoff=now)


def credit_left_over(draft: Draft) -> list[BalanceAdjustment]:
    """The credit a draft could not take, as the adjustment the next statement takes over."""
    if not draft.built.unapplied_credit:
        return []
    return [BalanceAdjustment(
        workspace=draft.workspace, amount=-draft.built.unapplied_credit,
        kind=BalanceAdjustment.Kind.REMAINDER,
        description=f"Credit left over from the {draft.period:%B %Y} statement",
    )]

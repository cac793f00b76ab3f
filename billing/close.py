"""Closing a month: finalizing one statement per workspace with something to bill, in month order.

Months close in order (E6): closing a month first closes, oldest first, every earlier month still
open for the workspace (after its last live statement), so each month's fees, commitment and free
tier are applied once (E2). A month cannot be closed once a later month has a live statement.
Which events each statement bills: billing.drafts and docs/money-flow.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime

from django.db import IntegrityError, transaction
from django.utils import timezone as dj_timezone

from core.periods import months_between, next_month, period_bounds
from usage.models import UsageEvent, received_since
from workspaces.models import Workspace

from . import statement as engine
from .credits import credits_consume
from .drafts import Draft, credit_left_over, statement_drafts
from .errors import CloseRefused
from .events import statements_closed_publish
from .invoices import invoices_issue
from .models import BalanceAdjustment, Plan, Statement, StatementAudit, StatementLine
from .selectors import DEFAULT_PLAN_NAME, LIVE, first_open_months

logger = logging.getLogger(__name__)

_CHUNK = 2000  # workspaces per transaction and per GROUP BY (bench: 500 → 58 s, 2000 → 34 s)


def _refuse_open(period: date, now: datetime) -> None:
    if period_bounds(period)[1] > now:
        raise CloseRefused(f"{period:%Y-%m} is not over yet; it can be closed from {next_month(period):%Y-%m-%d}.")


@dataclass
class CloseReport:
    period: date
    created: int = 0  # statements finalized, the period's and any earlier month's it caught up on
    already_closed: int = 0
    later_closed: int = 0  # a later month is closed: this one's events are late usage there
    empty: int = 0
    workspaces: int = 0
    months: dict[date, int] = field(default_factory=dict)  # statements finalized per month

    @property
    def caught_up(self) -> dict[date, int]:
        """Earlier months that were still open and got closed first."""
        return {month: n for month, n in self.months.items() if month != self.period and n}


def statement_close(
    workspace: Workspace, period: date, *, now: datetime | None = None, actor: str = "close_period"
) -> tuple[Statement | None, bool]:
    """Finalize `workspace`'s statement for `period`, once, closing any earlier month still open
    first. Returns (statement, created); (None, False) when there is nothing to bill.

    Idempotent: a live statement for the month is returned as it is. Concurrent closes are
    arbitrated by the unique constraint (one live statement per workspace and month).
    """
    now = now or dj_timezone.now()
    existing = Statement.objects.filter(LIVE, workspace=workspace, period=period).first()
    if existing is not None:
        return existing, False
    _refuse_open(period, now)
    later = Statement.objects.filter(LIVE, workspace=workspace, period__gt=period).order_by("period").first()
    if later is not None:
        raise CloseRefused(
            f"{workspace.slug}: a later month is already closed ({later.period:%Y-%m}); {period:%Y-%m}'s usage "
            f"is billed there or on the next statement as late usage."
        )
    report = period_close(period, only=workspace, now=now, actor=actor)
    statement = Statement.objects.filter(LIVE, workspace=workspace, period=period).first()
    return statement, statement is not None and report.months.get(period, 0) > 0


def period_close(
    period: date,
    *,
    only: Workspace | None = None,
    now: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
    actor: str = "close_period",
) -> CloseReport:
    """Close `period` for every workspace with something to bill (or `only` one), closing first,
    oldest first, every earlier month that is still open for it. Safe to re-run or resume."""
    now = now or dj_timezone.now()
    _refuse_open(period, now)
    _default_plan_ensure()
    ids = None if only is None else [only.pk]
    first = first_open_months(ids, period, now=now)
    report = CloseReport(period=period, workspaces=len(first))
    live_here = Statement.objects.filter(LIVE, period=period)
    later = Statement.objects.filter(LIVE, period__gt=period).exclude(
        workspace_id__in=Statement.objects.filter(LIVE, period=period).values("workspace_id")
    )
    start, end = period_bounds(period)
    active = UsageEvent.objects.filter(
        received_since(start), received_at__lte=now, occurred_at__gte=start, occurred_at__lt=end
    )
    if only is not None:
        live_here, later, active = live_here.filter(workspace=only), later.filter(workspace=only), active.filter(workspace=only)
    report.already_closed = live_here.count()
    report.later_closed = len(
        set(later.values_list("workspace_id", flat=True)) & set(active.values_list("workspace_id", flat=True).distinct())
    )
    months = months_between(min(first.values()), period) if first else []
    total = sum(1 for month in months for w in first.values() if w <= month)
    done = 0
    for month in months:
        ids_now = sorted(workspace_id for workspace_id, opens in first.items() if opens <= month)
        for chunk_start in range(0, len(ids_now), _CHUNK):
            chunk = list(Workspace.objects.filter(pk__in=ids_now[chunk_start : chunk_start + _CHUNK]).order_by("pk"))
            created, empty = _close_chunk(chunk, month, now=now, actor=actor)
            report.months[month] = report.months.get(month, 0) + created
            report.created += created
            if month == period:
                report.empty += empty
            done += len(chunk)
            if progress:
                progress(done, total)
    return report


def _default_plan_ensure() -> None:
    """Statements store their plan: the default one must exist (migration 0004 creates it; a
    database emptied since, e.g. by tests, may lack it)."""
    if not Plan.objects.filter(is_default=True).exists():
        Plan.objects.get_or_create(name=DEFAULT_PLAN_NAME, defaults={"is_default": True})


def _lock(workspace_ids: list[int]) -> None:
    """One close (or reissue) at a time per workspace, until the transaction ends: what a close
    bills depends on the statements before it, so it must read them and store its own as one
    step. FOR NO KEY UPDATE: ingestion's foreign-key locks on the workspace never wait for it.
    (SQLite takes its one write lock at BEGIN: settings' transaction_mode IMMEDIATE.)"""
    list(Workspace.objects.select_for_update(no_key=True).filter(pk__in=workspace_ids).order_by("pk").values_list("pk"))


def _close_chunk(workspaces: list[Workspace], period: date, *, now: datetime, actor: str) -> tuple[int, int]:
    """Close a chunk in one transaction, its workspaces locked; on a conflict, one by one.
    Returns (statements created, workspaces with nothing to bill)."""
    try:
        with transaction.atomic():
            created, empty = _close_locked(workspaces, period, now=now, actor=actor)
        return created, empty
    except IntegrityError:
        created = empty = 0
        for workspace in workspaces:
            try:
                with transaction.atomic():
                    one, none = _close_locked([workspace], period, now=now, actor=actor)
                created, empty = created + one, empty + none
            except IntegrityError:
                continue  # another close won the race; theirs is the statement
        return created, empty


def _close_locked(workspaces: list[Workspace], period: date, *, now: datetime, actor: str) -> tuple[int, int]:
    _lock([workspace.pk for workspace in workspaces])
    live = set(
        Statement.objects.filter(LIVE, workspace__in=workspaces, period__gte=period).values_list("workspace_id", flat=True)
    )
    todo = [workspace for workspace in workspaces if workspace.pk not in live]
    drafts = [d for d in statement_drafts(todo, period, now=now).values() if not d.is_empty]
    _store_many(drafts, actor=actor, now=now)
    return len(drafts), len(todo) - len(drafts)


def _store(draft: Draft, *, actor: str, now: datetime, reissue_of: Statement | None = None) -> Statement:
    return _store_many([draft], actor=actor, now=now, reissue_of=reissue_of)[0]


def _store_many(
    drafts: list[Draft], *, actor: str, now: datetime, reissue_of: Statement | None = None
) -> list[Statement]:
    statements = Statement.objects.bulk_create(
        Statement(
            workspace=draft.workspace,
            period=draft.period,
            status=Statement.Status.FINALIZED,
            plan=draft.plan,
            total=draft.built.total,
            amount_due_cents=draft.built.amount_due_cents,
            carried_forward=draft.built.carried_forward,
            carried_in=draft.prior.carried,
            tax_name=draft.built.tax_rate.name if draft.built.tax else "",
            tax_percent=draft.built.tax_rate.percent if draft.built.tax else 0,
            tax=draft.built.tax,
            credits_applied=draft.built.credits_applied,
            usage_cutoff=draft.cutoff,
            prior_period=draft.prior.period,
            prior_cutoff=draft.prior.cutoff,
            finalized_at=now,
            reissue_of=reissue_of,
        )
        for draft in drafts
    )
    StatementLine.objects.bulk_create(
        StatementLine(statement=statement, position=n, kind=line.kind, description=line.description[:300],
                      quantity=line.quantity, unit_price=line.unit_price, amount=line.amount)
        for statement, draft in zip(statements, drafts, strict=True)
        for n, line in enumerate(draft.built.lines, start=1)
    )
    applied = {a.pk: statement for statement, draft in zip(statements, drafts, strict=True) for a in draft.adjustments}
    for statement in set(applied.values()):
        taken = [pk for pk, s in applied.items() if s is statement]
        # Only adjustments nobody else applied meanwhile: a concurrent close fails the transaction.
        if reissue_of is None:
            claimed = BalanceAdjustment.objects.filter(pk__in=taken, applied_to__isnull=True).update(applied_to=statement)
        else:
            claimed = BalanceAdjustment.objects.filter(pk__in=taken, applied_to=reissue_of).update(applied_to=statement)
        if claimed != len(taken):
            raise IntegrityError("balance adjustments were applied by a concurrent close")
    remainders = []
    for statement, draft in zip(statements, drafts, strict=True):
        if reissue_of is None:  # a reissue settles its remainder in statement_void_and_reissue
            for adjustment in credit_left_over(draft):
                adjustment.source = statement
                remainders.append(adjustment)
    BalanceAdjustment.objects.bulk_create(remainders)
    credits_consume(statements, now=now)  # in this transaction: a rolled-back close consumes nothing
    audits = []
    for statement, draft in zip(statements, drafts, strict=True):
        built = draft.built
        note = f"total {built.total}, due {built.amount_due_cents} cents"
        if built.carried_forward:
            note += f", {built.carried_forward} carried forward (below the {engine.MINIMUM_CHARGE} minimum)"
        if built.unapplied_credit:
            note += f", {built.unapplied_credit} of credit left for the next statement"
        if built.credits_applied:
            note += f", {built.credits_applied} of prepaid credits applied"
        audits.append(StatementAudit(statement=statement, actor=actor, action="finalized", note=note))
    StatementAudit.objects.bulk_create(audits)
    invoices = invoices_issue(statements, now=now)  # the numbers stay locked until the commit
    statements_closed_publish(statements, invoices)  # the event stream (notifications)
    return statements

"""Prepaid credits: a wallet per workspace, kept as an append-only ledger (CreditEntry) of lots
(CreditLot) granted by staff or bought by card (billing.credit_purchases).

- The balance is the sum of the workspace's entries; each lot's `remaining` is the sum of its own,
  maintained in the transaction that writes them, and never negative (a database CHECK).
- Statements consume credits as their own line (billing.statement step 8: after the discounts, the
  free tier, the commitment shortfall and the fixed fees; before tax). The close writes the
  consumption entries in the transaction that stores the statement, with the workspace locked
  (billing.close._store_many), so a rolled-back close consumes nothing; a voided statement gives
  its consumption back once (REVERSAL entries), and its replacement consumes again.
- Lots are consumed oldest-expiring first (no expiry last), then oldest. A lot is usable until its
  `expires_at`; the daily job writes an EXPIRY entry for what is left of each lot past it.
- Between closes the live balance is the usable balance less the spend not billed yet (usage at
  list price from the daily rollups, since the last live statement's month): an approximation
  from above of what the next close will consume, as the allowance and budgets count spend.

Every writer that consumes or removes credits (close, reissue, expiry) holds the workspace's lock
(billing.close._lock), so what a close reads as available is still there when it consumes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from core.errors import ServiceError
from core.money import ZERO, from_micros, money
from core.periods import current_period, next_month
from usage.models import DailyRollup
from workspaces.models import Workspace

from .models import CreditEntry, CreditLot, CreditPurchase, Statement

logger = logging.getLogger(__name__)

# Called after the commit of anything that changes a balance, with the workspace id: budgets
# registers the drop of its cached hard limits here (budgets.apps), as prepaid-only plans stop at
# the balance. A lower app tells a higher one through a hook, never an import.
balance_changed_hooks: list[Callable[[int], None]] = []


class CreditsInvalid(ServiceError):
    """The credits request is invalid."""


def _balance_changed(workspace_id: int) -> None:
    def run() -> None:
        for hook in balance_changed_hooks:
            try:
                hook(workspace_id)
            except Exception:  # a cache that cannot be dropped must not undo the ledger
                logger.exception("credits: balance hook failed for workspace %s", workspace_id)

    transaction.on_commit(run)


def remaining_add(lot_id: int, delta: Decimal) -> None:
    """Move a lot's `remaining` by `delta`, computed here in Decimal (never in SQL: SQLite would
    do it in floating point), the lot locked. Every entry written is matched by one of these."""
    lot = CreditLot.objects.select_for_update().only("remaining").get(pk=lot_id)
    CreditLot.objects.filter(pk=lot_id).update(remaining=money(lot.remaining + delta))


def usable_q(now: datetime) -> Q:
    return Q(remaining__gt=0) & (Q(expires_at__isnull=True) | Q(expires_at__gt=now))


CONSUMPTION_ORDER = (F("expires_at").asc(nulls_last=True), "created_at", "pk")


# --- Writes --------------------------------------------------------------------------------------


def _lot_add(
    workspace_id: int, *, source: str, amount: Decimal, kind: str, actor: str, now: datetime,
    expires_at: datetime | None = None, note: str = "", purchase: CreditPurchase | None = None,
) -> CreditLot:  # fmt: skip
    lot = CreditLot.objects.create(
        workspace_id=workspace_id, source=source, amount=amount, remaining=amount, expires_at=expires_at,
        note=note[:300], created_by=actor[:200], purchase=purchase,
    )  # fmt: skip
    CreditEntry.objects.create(workspace_id=workspace_id, lot=lot, kind=kind, amount=amount, note=note[:300], created_at=now)
    _balance_changed(workspace_id)
    return lot


def grant_errors(amount: Decimal | None, expires_at: datetime | None, *, now: datetime) -> dict[str, list[str]]:
    """What is wrong with a grant (the admin's form and credits_grant)."""
    errors = {}
    if amount is None or amount <= 0 or money(amount) != amount:
        errors["amount"] = ["A grant is a positive amount of USD, at most 6 decimal places."]
    if expires_at is not None and expires_at <= now:
        errors["expires_at"] = ["The expiry must be in the future."]
    return errors


@transaction.atomic
def credits_grant(
    workspace: Workspace, amount: Decimal, *, actor: str, expires_at: datetime | None = None, note: str = "",
    now: datetime | None = None,
) -> CreditLot:  # fmt: skip
    """Staff grant promotional credits: a lot of its own, with an optional expiry and a note."""
    now = now or timezone.now()
    amount = Decimal(amount)
    errors = grant_errors(amount, expires_at, now=now)
    if errors:
        raise CreditsInvalid(errors=errors)
    return _lot_add(
        workspace.pk, source=CreditLot.Source.GRANT, amount=amount, kind=CreditEntry.Kind.GRANT, actor=actor,
        now=now, expires_at=expires_at, note=note,
    )  # fmt: skip


def purchase_lot_grant(purchase: CreditPurchase, *, now: datetime) -> CreditLot | None:
    """The lot of a purchase that succeeded, once: call under the purchase's row lock. None when it
    was granted already (the webhook and the charge's answer both report the success)."""
    if CreditLot.objects.filter(purchase=purchase).exists():
        return None
    return _lot_add(
        purchase.workspace_id, source=CreditLot.Source.PURCHASE, amount=Decimal(purchase.amount_cents) / 100,
        kind=CreditEntry.Kind.PURCHASE, actor=purchase.created_by, now=now, purchase=purchase,
        note=f"Bought by card (PaymentIntent {purchase.payment_intent_id or '?'})",
    )  # fmt: skip


def credits_consume(statements: Iterable[Statement], *, now: datetime) -> None:
    """Write the consumption of each statement's credits line, lot by lot in consumption order.
    Call in the transaction that stores the statements, their workspaces locked: the amounts were
    computed from the same lots (credits_available), so they are there; if not, the transaction
    fails rather than consume what does not exist."""
    for statement in statements:
        wanted = statement.credits_applied
        if wanted <= 0:
            continue
        lots = CreditLot.objects.select_for_update().filter(usable_q(now), workspace_id=statement.workspace_id)
        entries = []
        for lot in lots.order_by(*CONSUMPTION_ORDER):
            take = min(lot.remaining, wanted)
            remaining_add(lot.pk, -take)
            entries.append(CreditEntry(
                workspace_id=statement.workspace_id, lot=lot, kind=CreditEntry.Kind.CONSUMPTION, amount=-take,
                statement=statement, note=f"{statement.period:%B %Y} statement", created_at=now,
            ))  # fmt: skip
            wanted -= take
            if wanted <= 0:
                break
        if wanted > 0:
            raise IntegrityError(f"statement {statement.pk}: {wanted} of credits are no longer there")
        CreditEntry.objects.bulk_create(entries)
        _balance_changed(statement.workspace_id)


def credits_give_back(statement: Statement, *, now: datetime) -> Decimal:
    """A voided statement's consumption, given back to the lots it came from (once: a unique
    constraint per lot, statement and kind). Call with the workspace locked. Returns the amount.
    A lot that expired meanwhile gets its part back and the next expiry run removes it again."""
    consumed = list(CreditEntry.objects.filter(statement=statement, kind=CreditEntry.Kind.CONSUMPTION).order_by("pk"))
    total = ZERO
    for entry in consumed:
        remaining_add(entry.lot_id, -entry.amount)
        CreditEntry.objects.create(
            workspace_id=entry.workspace_id, lot_id=entry.lot_id, kind=CreditEntry.Kind.REVERSAL, amount=-entry.amount,
            statement=statement, note=f"{statement.period:%B %Y} statement voided", created_at=now,
        )  # fmt: skip
        total += -entry.amount
    if consumed:
        _balance_changed(statement.workspace_id)
    return total


def credits_expire_due(*, now: datetime | None = None) -> int:
    """Write an EXPIRY entry for what is left of every lot past its expiry (the daily job).
    Idempotent: an expired lot has nothing left, and a run finds nothing more to do. Returns the
    number of lots expired."""
    from .close import _lock

    now = now or timezone.now()
    due = CreditLot.objects.filter(remaining__gt=0, expires_at__lte=now)
    expired = 0
    for workspace_id in sorted(set(due.values_list("workspace_id", flat=True))):
        with transaction.atomic():
            _lock([workspace_id])  # never between a close's read of the lots and its consumption
            for lot in due.filter(workspace_id=workspace_id).select_for_update().order_by("pk"):
                CreditLot.objects.filter(pk=lot.pk).update(remaining=0)
                CreditEntry.objects.create(
                    workspace_id=workspace_id, lot=lot, kind=CreditEntry.Kind.EXPIRY, amount=-lot.remaining,
                    note=f"expired {lot.expires_at:%Y-%m-%d %H:%M} UTC", created_at=now,
                )  # fmt: skip
                expired += 1
            _balance_changed(workspace_id)
    return expired


# --- Reads ---------------------------------------------------------------------------------------


def credits_available(workspace_ids: list[int], *, now: datetime) -> dict[int, Decimal]:
    """What each workspace's statements may consume now: what is left of its unexpired lots."""
    rows = (
        CreditLot.objects.filter(usable_q(now), workspace_id__in=workspace_ids)
        .values("workspace_id").annotate(left=Sum("remaining")).order_by()
    )  # fmt: skip
    return {row["workspace_id"]: money(row["left"]) for row in rows}  # money(): SQLite sums in floats


def credit_balance(workspace_id: int) -> Decimal:
    """The ledger's balance: the sum of the workspace's entries."""
    return money(CreditEntry.objects.filter(workspace_id=workspace_id).aggregate(s=Sum("amount"))["s"] or ZERO)


def unbilled_spend(workspace_id: int, *, now: datetime) -> Decimal:
    """Usage at list price not billed by a statement yet: the rollups from the month after the last
    live statement's (at most last month) to now. One indexed sum."""
    from .selectors import LIVE

    period = current_period(now)
    last = Statement.objects.filter(LIVE, workspace_id=workspace_id).order_by("-period").values_list("period", flat=True).first()
    start = period if last is None else min(next_month(last), period)
    if last is None:
        first_use = DailyRollup.objects.filter(workspace_id=workspace_id, day__lt=period).order_by("day").values_list("day", flat=True).first()
        start = period if first_use is None else min(first_use.replace(day=1), period)
    micros = DailyRollup.objects.filter(workspace_id=workspace_id, day__gte=start).aggregate(s=Sum("amount_micros"))["s"]
    return from_micros(int(micros or 0))


@dataclass(frozen=True)
class CreditSummary:
    balance: Decimal  # USD: the ledger's sum
    available: Decimal  # USD: what a statement may consume now (unexpired lots)
    unbilled_spend: Decimal  # USD: usage at list price not billed yet
    live_balance: Decimal  # USD: available less the unbilled spend, never below zero
    lots: list[CreditLot]
    entries: list[CreditEntry]


def credit_summary(workspace: Workspace, *, now: datetime | None = None, entries: int = 50) -> CreditSummary:
    now = now or timezone.now()
    available = credits_available([workspace.pk], now=now).get(workspace.pk, ZERO)
    spend = unbilled_spend(workspace.pk, now=now)
    return CreditSummary(
        balance=credit_balance(workspace.pk),
        available=available,
        unbilled_spend=spend,
        live_balance=max(available - spend, ZERO),
        lots=list(CreditLot.objects.filter(workspace=workspace).order_by("-created_at", "-pk")[:100]),
        entries=list(CreditEntry.objects.filter(workspace=workspace).select_related("statement").order_by("-created_at", "-pk")[:entries]),
    )


def live_balance(workspace_id: int, *, now: datetime | None = None) -> Decimal:
    now = now or timezone.now()
    available = credits_available([workspace_id], now=now).get(workspace_id, ZERO)
    return max(available - unbilled_spend(workspace_id, now=now), ZERO)

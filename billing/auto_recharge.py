"""Auto-recharge: when a workspace's live credit balance (billing.credits.live_balance) falls below
its threshold, buy a set amount with the saved card (billing.credit_purchases).

- At most once per crossing: the settings row is locked (SELECT … FOR UPDATE) while the check
  decides; a charge clears `armed` and numbers the crossing (CreditPurchase is unique per workspace
  and crossing), and only a live balance back at or above the threshold arms it again. So any
  number of concurrent checks (ingestion's tasks, the every-minute job) make one PaymentIntent.
- At most `max_per_day` recharges a UTC day: past it the crossing waits, armed, for tomorrow.
- A declined recharge disables auto-recharge (with the reason) and notifies; adding a card
  (billing.cards.payment_method_set) enables it again and checks at once.
- Checked by a task enqueued when ingestion moves spend (after the budgets' evaluation, coalesced
  per workspace the same way: budgets.tasks.workspace_evaluate) and by the every-minute job.
"""

from __future__ import annotations

from datetime import datetime, time
from datetime import timezone as dt_timezone
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from core.jobs import enqueue
from core.money import money
from workspaces.models import Workspace

from .credit_notices import credit_notice
from .credit_purchases import _begin, _send, purchase_amount_cents
from .credits import CreditsInvalid, credit_balance, live_balance
from .models import AutoRecharge, CreditPurchase

ACTOR = "auto-recharge"
MAX_PER_DAY_LIMIT = 24


def auto_recharge_of(workspace: Workspace) -> AutoRecharge | None:
    return AutoRecharge.objects.filter(workspace=workspace).first()


@transaction.atomic
def auto_recharge_set(
    workspace: Workspace, *, enabled: bool, threshold: Decimal, amount: Decimal, max_per_day: int
) -> AutoRecharge:
    """Save the workspace's auto-recharge settings (the API and the dashboard's form). A setting
    disabled by a declined recharge cannot be enabled again before a new card is added."""
    errors: dict[str, list[str]] = {}
    try:
        purchase_amount_cents(amount)
    except CreditsInvalid as exc:
        errors.update(exc.errors or {})
    if not isinstance(threshold, Decimal) or not threshold.is_finite() or threshold < 0 or threshold > Decimal(10000):
        errors["threshold"] = ["A threshold from 0 to 10,000 USD."]
    elif threshold != threshold.quantize(Decimal("0.01")):
        errors["threshold"] = ["At most 2 decimal places."]
    if not 1 <= max_per_day <= MAX_PER_DAY_LIMIT:
        errors["max_per_day"] = [f"From 1 to {MAX_PER_DAY_LIMIT} recharges a day."]
    settings = AutoRecharge.objects.select_for_update().filter(workspace=workspace).first()
    if enabled and settings is not None and settings.disabled_reason and not settings.enabled:
        errors["enabled"] = [f"Auto-recharge was disabled after a declined charge ({settings.disabled_reason}): add a new card first."]
    if errors:
        raise CreditsInvalid(errors=errors)
    if settings is None:
        settings = AutoRecharge(workspace=workspace)
    settings.enabled, settings.threshold, settings.amount, settings.max_per_day = enabled, threshold, amount, max_per_day
    settings.save()
    if enabled:
        transaction.on_commit(lambda: enqueue("billing.tasks.credits_auto_recharge", workspace.pk))
    return settings


def auto_recharge_request(workspace_id: int) -> bool:
    """Spend moved (ingestion): enqueue a check when auto-recharge is on. Returns whether it did."""
    if not AutoRecharge.objects.filter(workspace_id=workspace_id, enabled=True).exists():
        return False
    enqueue("billing.tasks.credits_auto_recharge", workspace_id)
    return True


def credits_auto_recharge(workspace_id: int, *, now: datetime | None = None) -> CreditPurchase | None:
    """Recharge once if the live balance crossed below the threshold (the module docstring).
    Returns the purchase it made, or None. Call outside a transaction."""
    now = now or timezone.now()
    with transaction.atomic():
        settings = AutoRecharge.objects.select_for_update().select_related("workspace").filter(workspace_id=workspace_id).first()
        if settings is None or not settings.enabled:
            return None
        balance = live_balance(workspace_id, now=now)
        if balance >= settings.threshold:
            if not settings.armed:
                settings.armed = True
                settings.save(update_fields=["armed", "updated_at"])
            return None
        if not settings.armed:
            return None  # this crossing was charged already
        day_start = datetime.combine(now.astimezone(dt_timezone.utc).date(), time.min, tzinfo=dt_timezone.utc)
        today = CreditPurchase.objects.filter(workspace_id=workspace_id, crossing__isnull=False, created_at__gte=day_start).count()
        if today >= settings.max_per_day:
            return None
        settings.armed = False
        settings.crossings += 1
        settings.save(update_fields=["armed", "crossings", "updated_at"])
        _low_notice(settings, balance)
        purchase = _begin(
            settings.workspace, purchase_amount_cents(settings.amount), actor=ACTOR, crossing=settings.crossings, now=now
        )
    if purchase.status == CreditPurchase.Status.STARTED:
        purchase = _send(purchase, now=now)
    return purchase


def auto_recharges_check_due(*, now: datetime | None = None) -> int:
    """The every-minute job: check every workspace with auto-recharge on. Returns recharges made."""
    made = 0
    for workspace_id in AutoRecharge.objects.filter(enabled=True).values_list("workspace_id", flat=True):
        made += credits_auto_recharge(workspace_id, now=now) is not None
    return made


def recharge_settled(purchase: CreditPurchase, *, succeeded: bool) -> None:
    """A purchase was settled (under its lock, its lot granted): tell the owners and admins and
    the event stream (`credits.recharged`, or `credits.recharge_failed` for an auto-recharge); a
    declined auto-recharge also turns auto-recharge off until a new card is added."""
    amount = money(Decimal(purchase.amount_cents) / 100)
    auto = purchase.crossing is not None
    key = f"credit_purchase:{purchase.pk}"
    if succeeded:
        data = {"amount": amount, "balance": credit_balance(purchase.workspace_id), "currency": "USD",
                "purchase_id": purchase.pk, "source": "auto_recharge" if auto else "purchase", "crossing": purchase.crossing}
        subject = f"Credits recharged: {amount:.2f} USD" if auto else f"Credits bought: {amount:.2f} USD"
        text = f"{amount:.2f} USD of credits were bought with the saved card."
        if auto:
            text = f"Your credit balance fell below its threshold, so {text}"
        credit_notice(purchase.workspace_id, "credits.recharged", data, key=key, subject=subject, text=text)
        return
    if not auto:
        return  # the person buying sees the failure at once (the API's answer, the page)
    reason = purchase.error or "declined"
    AutoRecharge.objects.filter(workspace_id=purchase.workspace_id).update(enabled=False, disabled_reason=reason[:300])
    credit_notice(
        purchase.workspace_id, "credits.recharge_failed",
        {"purchase_id": purchase.pk, "amount": amount, "currency": "USD", "reason": reason, "crossing": purchase.crossing},
        key=key, subject="Auto-recharge failed and is now off",
        text=f"Buying {amount:.2f} USD of credits failed: {reason}\nAuto-recharge is off until a new card is added.",
    )  # fmt: skip


def _low_notice(settings: AutoRecharge, balance: Decimal) -> None:
    """The live balance crossed below the threshold (once per crossing, with the recharge)."""
    credit_notice(
        settings.workspace_id, "credits.low",
        {"balance": money(balance), "threshold": money(settings.threshold), "currency": "USD"},
        key=f"credits:{settings.workspace_id}:crossing:{settings.crossings}",
        subject=f"Credit balance below {settings.threshold:.2f} USD",
        text=f"Your live credit balance is {balance:.2f} USD, below {settings.threshold:.2f} USD: "
             f"{settings.amount:.2f} USD are being bought with the saved card (auto-recharge).",
    )  # fmt: skip


def auto_recharge_card_added(workspace_id: int) -> None:
    """A new card: auto-recharge disabled by a decline is on again, armed (call in the transaction
    that saves the card; the check runs after the commit)."""
    changed = AutoRecharge.objects.filter(workspace_id=workspace_id, enabled=False).exclude(disabled_reason="").update(
        enabled=True, armed=True, disabled_reason=""
    )
    if changed:
        transaction.on_commit(lambda: enqueue("billing.tasks.credits_auto_recharge", workspace_id))

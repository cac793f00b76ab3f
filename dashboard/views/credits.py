"""The credits page: the wallet (balance, live balance, lots with expiry, the ledger), buying credits
with the saved card, and auto-recharge. Members read it; owners and admins buy and set."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.contrib import messages
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from billing.auto_recharge import auto_recharge_of, auto_recharge_set
from billing.credit_purchases import PURCHASE_MAX, PURCHASE_MIN, credit_purchase
from billing.credits import CreditsInvalid, credit_summary

from ..access import MANAGE, back, workspace_page


def _decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text.strip())
    except (InvalidOperation, AttributeError):
        return None


def _page(request, *, buy_errors: dict | None = None, recharge_errors: dict | None = None, values=None, status: int = 200):
    workspace = request.access.workspace
    settings = auto_recharge_of(workspace)
    form = {"enabled": False, "threshold": "10.00", "amount": "25.00", "max_per_day": 3, "buy_amount": "25.00"}
    if settings is not None:
        form.update(enabled=settings.enabled, threshold=f"{settings.threshold:.2f}", amount=f"{settings.amount:.2f}",
                    max_per_day=settings.max_per_day)
    if values is not None:  # what was sent, shown again with its errors
        if buy_errors:
            form["buy_amount"] = values.get("amount", "")
        else:
            form.update(enabled=values.get("enabled") == "on", threshold=values.get("threshold", ""),
                        amount=values.get("amount", ""), max_per_day=values.get("max_per_day", ""))
    return render(request, "dashboard/credits.html", {
        "summary": credit_summary(workspace),
        "recharge": settings,
        "form": form,
        "buy_errors": [e for messages in (buy_errors or {}).values() for e in messages],
        "buy_amount_invalid": "amount" in (buy_errors or {}),  # not when the card, say, failed
        "recharge_errors": recharge_errors or {},
        "purchase_min": PURCHASE_MIN,
        "purchase_max": PURCHASE_MAX,
    }, status=status)  # fmt: skip


@require_GET
@workspace_page()
def credits(request):
    return _page(request)


def _errors_of(exc: CreditsInvalid) -> dict:
    return exc.errors or {"detail": [str(exc)]}


@require_POST
@workspace_page(MANAGE)
def credits_buy(request):
    amount = _decimal(request.POST.get("amount", ""))
    if amount is None:
        return _page(request, buy_errors={"amount": ["An amount of USD, e.g. 25.00."]}, values=request.POST, status=400)
    try:
        purchase = credit_purchase(request.access.workspace, amount, actor=f"dashboard:{request.user}")
    except CreditsInvalid as exc:
        return _page(request, buy_errors=_errors_of(exc), values=request.POST, status=400)
    if purchase.status == "succeeded":
        messages.success(request, f"{amount:.2f} USD of credits bought: they are in the wallet.")
    elif purchase.status == "failed":
        messages.error(request, f"The purchase failed: {purchase.error}")
    else:
        messages.info(request, "The payment is being confirmed: the credits appear once it succeeded.")
    return back(request, "dashboard:credits")


@require_POST
@workspace_page(MANAGE)
def credits_auto_recharge(request):
    try:
        max_per_day = int(request.POST.get("max_per_day", ""))
    except ValueError:
        max_per_day = 0
    threshold, amount = _decimal(request.POST.get("threshold", "")), _decimal(request.POST.get("amount", ""))
    errors = {}
    if threshold is None:
        errors["threshold"] = ["An amount of USD."]
    if amount is None:
        errors["amount"] = ["An amount of USD."]
    if not errors:
        try:
            auto_recharge_set(
                request.access.workspace, enabled=request.POST.get("enabled") == "on", threshold=threshold,
                amount=amount, max_per_day=max_per_day,
            )  # fmt: skip
        except CreditsInvalid as exc:
            errors = _errors_of(exc)
    if errors:
        return _page(request, recharge_errors=errors, values=request.POST, status=400)
    messages.success(request, "Auto-recharge saved.")
    return back(request, "dashboard:credits")

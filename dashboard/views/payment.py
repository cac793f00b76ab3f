"""The payment method page: the card on file (Stripe Elements adds or replaces it) and failed payments."""

from __future__ import annotations

from django.conf import settings
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from billing.cards import payment_card
from billing.stripe_api import StripeMode, payments_configured, stripe_mode

from ..access import workspace_page
from ..selectors.payment import failed_statements

# Shown in test mode only. Stripe's own test numbers, which localstripe (`make run`'s simulator) knows too.
TEST_CARDS = (
    ("4242424242424242", "Saved, and every charge to it succeeds."),
    ("4000000000000341", "Saved, but every charge to it is declined: the statement it is charged for goes to "
                            "payment failed (owners and admins are e-mailed) until a working card is saved, "
                            "which retries it at once."),
    ("4000000000000002", "Declined when saved: the card on file stays as it was."),
)  # fmt: skip


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
            "failed": failed_statements(workspace),
            "test_cards": TEST_CARDS if stripe_mode() in (StripeMode.SIMULATOR, StripeMode.TEST) else (),
        },
    )

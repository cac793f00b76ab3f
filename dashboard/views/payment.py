"""The payment method page: the card on file (Stripe Elements adds or replaces it) and failed payments."""

from __future__ import annotations

from django.conf import settings
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from billing.cards import payment_card
from billing.stripe_api import payments_configured

from ..access import workspace_page
from ..selectors.payment import failed_statements


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
        },
    )

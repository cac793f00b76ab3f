"""POST /stripe/webhook/: Stripe's signed events, verified, stored once, then handled.

Stripe signs each delivery with STRIPE_WEBHOOK_SECRET (the `Stripe-Signature` header). Anything
unsigned, forged, too old, dated ahead or not JSON gets a 400 and changes nothing; so does every request while
the secret is unset. A handler failure answers 500, so that Stripe delivers the event again.
"""

from __future__ import annotations

import json
import logging
import time

import stripe
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .models import StripeWebhookEvent
from .stripe_events import webhook_event_receive

logger = logging.getLogger(__name__)

FUTURE_TOLERANCE_SECONDS = 60  # clocks differ a little; more than this ahead is not Stripe


def _signed_at(header: str) -> int:
    """The `t=` timestamp of a Stripe-Signature header that verify_header accepted."""
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            return int(value)
    raise stripe.SignatureVerificationError("No timestamp", header)


@csrf_exempt  # Stripe cannot send a CSRF token; the signature authenticates the request.
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        logger.warning("Stripe webhook refused: STRIPE_WEBHOOK_SECRET is not set")
        return JsonResponse({"detail": "Webhooks are not configured (STRIPE_WEBHOOK_SECRET)."}, status=400)
    try:
        header = request.headers.get("Stripe-Signature")
        stripe.WebhookSignature.verify_header(request.body, header, secret, stripe.Webhook.DEFAULT_TOLERANCE)
        # Stripe's check refuses only old timestamps; a signature dated ahead is refused here too.
        if _signed_at(header) > time.time() + FUTURE_TOLERANCE_SECONDS:
            logger.warning("Stripe webhook refused: signed %.0f s in the future", _signed_at(header) - time.time())
            return JsonResponse({"detail": "Stripe-Signature is dated in the future."}, status=400)
        event = json.loads(request.body)
    except stripe.SignatureVerificationError:
        return JsonResponse({"detail": "Bad or missing Stripe-Signature."}, status=400)
    except ValueError:  # not JSON, not UTF-8, or not an event
        return JsonResponse({"detail": "The body is not a Stripe event."}, status=400)
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not event["id"]:
        return JsonResponse({"detail": "The body is not a Stripe event."}, status=400)
    row, handled_now = webhook_event_receive(event)
    status = 500 if row.status == StripeWebhookEvent.Status.FAILED else 200
    return JsonResponse({"id": row.event_id, "status": row.status, "duplicate": not handled_now}, status=status)

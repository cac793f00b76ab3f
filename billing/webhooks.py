"""POST /stripe/webhook/: Stripe's signed events, verified, stored once, then handled.

Stripe signs each delivery with STRIPE_WEBHOOK_SECRET (the `Stripe-Signature` header). Anything
unsigned, forged, too old or not JSON gets a 400 and changes nothing; so does every request while
the secret is unset. A handler failure answers 500, so that Stripe delivers the event again.
"""

from __future__ import annotations

import json
import logging

import stripe
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .models import StripeWebhookEvent
from .payments import webhook_event_receive

logger = logging.getLogger(__name__)


@csrf_exempt  # Stripe cannot send a CSRF token; the signature authenticates the request.
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        logger.warning("Stripe webhook refused: STRIPE_WEBHOOK_SECRET is not set")
        return JsonResponse({"detail": "Webhooks are not configured (STRIPE_WEBHOOK_SECRET)."}, status=400)
    try:
        stripe.WebhookSignature.verify_header(
            request.body, request.headers.get("Stripe-Signature"), secret, stripe.Webhook.DEFAULT_TOLERANCE
        )
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

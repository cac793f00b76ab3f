"""The Stripe client, and what a failed request to Stripe means.

Every call to Stripe goes through `stripe_client()`: STRIPE_SECRET_KEY, STRIPE_API_BASE (tests
point it at localstripe) and STRIPE_TIMEOUT_SECONDS. `never_sent` tells a request that provably
never reached Stripe (nothing can have happened there) from one whose outcome is unknown; the
modules that call Stripe translate its errors into PaymentsUnavailable, so that no view needs to
know the `stripe` library.
"""

from __future__ import annotations

import enum
import functools
import re
from typing import Any
from urllib.parse import urlsplit

import requests
import stripe
import urllib3
from django.conf import settings

from core.errors import ServiceError
from core.metrics import STRIPE_CALLS

# Seconds to open a connection to Stripe; the wait for its answer is STRIPE_TIMEOUT_SECONDS.
CONNECT_TIMEOUT = 10.0


class PaymentsNotConfigured(ServiceError):
    """Payments are not configured on this server (STRIPE_SECRET_KEY is not set)."""

    status = 503


class PaymentsUnavailable(ServiceError):
    """The payment processor cannot be reached; try again in a minute."""

    status = 503


def payments_configured() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


class StripeMode(enum.StrEnum):
    """What money a payment moves, for the banner, the payment page's test cards and the demo."""

    OFF = "off"  # no STRIPE_SECRET_KEY: nothing is charged
    SIMULATOR = "simulator"  # a test key against a Stripe look-alike (localstripe, `make run`)
    TEST = "test"  # a test key against Stripe itself: Stripe's test mode
    LIVE = "live"  # a live key (or one that does not say it is a test key): real money


def _is_stripe_host(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host == "stripe.com" or host.endswith(".stripe.com")


def stripe_mode() -> StripeMode:
    """OFF without a key. Only a key that says it is a test key (`sk_test_…`, `rk_test_…`) is
    ever taken for test mode, so a live key is LIVE whatever STRIPE_API_BASE says (a proxy in front
    of Stripe, say); a test key against anything but *.stripe.com is the simulator."""
    key = settings.STRIPE_SECRET_KEY
    if not key:
        return StripeMode.OFF
    if not key.startswith(("sk_test_", "rk_test_")):
        return StripeMode.LIVE
    return StripeMode.TEST if _is_stripe_host(settings.STRIPE_API_BASE) else StripeMode.SIMULATOR


def stripe_timeout() -> float:
    """STRIPE_TIMEOUT_SECONDS, the wait for Stripe's answer to one request, kept within 1 to 80 s."""
    return min(max(float(getattr(settings, "STRIPE_TIMEOUT_SECONDS", 30)), 1.0), 80.0)


# An object id in a path (cus_…, pi_…, pm_…, seti_…: a digit or a capital after the prefix, which
# no resource name has): left out of the operation's name.
_OBJECT_ID = re.compile(r"^[a-z]+_[A-Za-z0-9]*[A-Z0-9][A-Za-z0-9]*$")
_VERBS = {("GET", False): "list", ("GET", True): "retrieve", ("POST", False): "create", ("POST", True): "update",
          ("DELETE", True): "delete"}  # fmt: skip


def stripe_operation(method: str, url: str) -> str:
    """A request's operation, as the metrics name it: `POST /v1/payment_intents` is
    payment_intents.create, `GET /v1/customers/cus_1` customers.retrieve, `POST
    /v1/payment_intents/pi_1/confirm` payment_intents.confirm, `GET /v1/payment_intents/search`
    payment_intents.search."""
    parts = [part for part in urlsplit(url).path.split("/") if part][1:]  # without the version
    has_id = any(_OBJECT_ID.match(part) for part in parts)
    words = [part for part in parts if not _OBJECT_ID.match(part)]
    if not words:
        return "other"
    if len(words) > 1:
        return ".".join(words)
    return f"{words[0]}.{_VERBS.get((method.upper(), has_id), method.lower())}"


class CountingRequestsClient(stripe.RequestsClient):
    """The stripe library's HTTP client, counting each request it makes (a retry is a request) by
    operation and outcome (meterboard_stripe_calls_total)."""

    def request(self, method, url, headers, post_data=None):
        operation = stripe_operation(method, url)
        try:
            content, status, answer_headers = super().request(method, url, headers, post_data)
        except Exception:
            STRIPE_CALLS.labels(operation, "unreachable").inc()
            raise
        outcome = "ok" if status < 400 else "client_error" if status < 500 else "server_error"
        STRIPE_CALLS.labels(operation, outcome).inc()
        return content, status, answer_headers


@functools.lru_cache(maxsize=4)
def _client(api_key: str, api_base: str, timeout: float) -> stripe.StripeClient:
    # Retried requests reuse the idempotency key, so a retry never makes a second object. Charges
    # are not retried by the library (max_network_retries=0 on them): see billing.payment_intents.payment_intent_create.
    return stripe.StripeClient(
        api_key=api_key, base_addresses={"api": api_base}, max_network_retries=2,
        http_client=CountingRequestsClient(timeout=(CONNECT_TIMEOUT, timeout)),
    )  # fmt: skip


def stripe_client() -> stripe.StripeClient:
    if not payments_configured():
        raise PaymentsNotConfigured("Payments are not configured: set STRIPE_SECRET_KEY.")
    return _client(settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE, stripe_timeout())


def never_sent(exc: BaseException) -> bool:
    """True when the request provably never left this machine: the connection to Stripe was never
    made (refused, a DNS failure, a connect timeout), so Stripe cannot have acted on it. Any other
    failure (a read timeout, a dropped connection, a 5xx) may come after Stripe acted."""
    if not isinstance(exc, stripe.APIConnectionError):
        return False
    cause = exc.__cause__
    if isinstance(cause, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(cause.args[0], "reason", None) if isinstance(cause, requests.ConnectionError) and cause.args else None
    return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError))


def failure_reason(exc: BaseException) -> str:
    """A short reason for a failed request, for people: the root cause's message."""
    cause: BaseException | None = exc
    while cause is not None and cause.__cause__ is not None:
        cause = cause.__cause__
    reason = getattr(cause.args[0], "reason", None) if cause is not None and cause.args else None
    text = str(reason or cause or exc)
    if "Connection refused" in text:
        return "connection refused"
    if isinstance(reason, urllib3.exceptions.NameResolutionError):
        return "its address does not resolve"
    if isinstance(cause, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(cause, requests.exceptions.ReadTimeout):
        return f"no answer within {stripe_timeout():g} s"
    if isinstance(exc, stripe.StripeError) and exc.http_status:
        return f"HTTP {exc.http_status}"
    return text.splitlines()[0][:200] if text else type(exc).__name__


def object_id(value: Any) -> str | None:
    """The id of an expandable field: a plain id, an expanded object, or nothing."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        return value.get("id")
    return getattr(value, "id", None)

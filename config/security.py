"""Browser policies on every response: a Content-Security-Policy that lets pages load only this
site's own files, plus Stripe.js and Stripe's frames on the payment page."""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def content_security_policy() -> str:
    return _policy(settings.STRIPE_JS_URL, settings.STRIPE_API_BASE)


@lru_cache(maxsize=8)
def _policy(stripe_js_url: str, stripe_api_base: str) -> str:
    stripe_js = _origin(stripe_js_url)
    stripe_api = _origin(stripe_api_base)
    stripe_frames = " ".join(filter(None, [stripe_js, "https://hooks.stripe.com"]))
    return "; ".join([
        "default-src 'self'",
        f"script-src 'self' {stripe_js}".strip(),
        # Plotly and Stripe.js set styles at run time; no script runs from an attribute.
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self'",
        f"connect-src 'self' {stripe_api}".strip(),
        f"frame-src {stripe_frames}",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", content_security_policy())
        return response


class MachineCallMiddleware:
    """What CommonMiddleware does that a machine call needs, for config.wsgi's short chain: the
    Host header checked against ALLOWED_HOSTS (a 400 otherwise, as on every other path) and the
    Content-Length of a response that is not streamed."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.get_host()  # raises DisallowedHost: answered 400
        response = self.get_response(request)
        if not response.streaming and not response.has_header("Content-Length"):
            response.headers["Content-Length"] = str(len(response.content))
        return response

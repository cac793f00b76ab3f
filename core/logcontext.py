"""Logs an operator can search (issue 14): with LOG_FORMAT=json each record is one JSON line that
carries the request it belongs to (request id, and for an API call the workspace and the API key's
prefix), and never a secret.

`RequestContextMiddleware` gives every request an id (the caller's `X-Request-ID` when it is a
plausible one, else a new one), answers it in `X-Request-ID`, and keeps it for the records logged
while the request runs; `bind` adds what authentication learns. `JsonFormatter` writes the lines;
secrets that reach a message anyway (an API key's secret, a Stripe key, a webhook signing secret)
are cut to what identifies them.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from contextvars import ContextVar
from datetime import datetime, timezone

from django.core.signals import request_finished

_context: ContextVar[dict | None] = ContextVar("mb_log_context", default=None)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# mbk_<12 hex>_<secret> keeps its prefix; Stripe's secret and restricted keys and webhook secrets
# keep their kind.
_SECRETS = (
    (re.compile(r"\b(mbk_[0-9a-f]{12})_[A-Za-z0-9_-]+"), r"\1_[secret]"),
    (re.compile(r"\b((?:sk|rk)_(?:live|test))_[A-Za-z0-9]+"), r"\1_[secret]"),
    (re.compile(r"\b(whsec)_[A-Za-z0-9+/=]+"), r"\1_[secret]"),
)


def bind(**values) -> None:
    """Add `values` to the current request's log context (no-op outside a request)."""
    current = _context.get()
    if current is not None:
        current.update(values)


def current() -> dict:
    return dict(_context.get() or {})


def scrub(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RequestContextMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        given = request.META.get("HTTP_X_REQUEST_ID", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        request.request_id = request_id
        # Kept until the response is closed (request_finished), not only until this returns: Django
        # logs a 4xx or 5xx answer ("Bad Request: …") after the middleware chain.
        _context.set({"request_id": request_id})
        response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response


def _forget(**kwargs) -> None:
    _context.set(None)


request_finished.connect(_forget, dispatch_uid="core.logcontext.forget")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, the request's context, and
    the exception's traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
            **current(),
        }
        if record.exc_info:
            line["exception"] = scrub(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)

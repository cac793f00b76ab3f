"""API conventions shared by every app: the error shape and the exception handler."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "payload_too_large"


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus Django's RequestDataTooBig answered as 413 instead of a 400/500."""
    from django.core.exceptions import RequestDataTooBig

    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge(
            "Request body is larger than the limit; send at most 1,000 events per request."
        )
    return drf_exception_handler(exc, context)

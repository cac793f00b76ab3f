"""API conventions shared by every app: the error shape and the exception handler."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "payload_too_large"


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus a service's error (core.errors.ServiceError) answered in the error
    envelope with its status, Django's RequestDataTooBig answered as 413 instead of a 400/500, and a
    database outage (unreachable, connection lost, or read-only: config.errors.is_database_outage)
    answered 503 with a JSON `detail` and `Retry-After` instead of an HTML 500.

    Ingestion's contract under such an error: nothing is half-written. On PostgreSQL the events
    and their rollups are one statement (atomic by itself), elsewhere one transaction; so a 503
    stored nothing of the batch, and resending it is safe (event_ids make it idempotent anyway)."""
    from django.core.exceptions import RequestDataTooBig

    from config.errors import DATABASE_UNAVAILABLE, RETRY_AFTER_SECONDS, is_database_outage
    from core.errors import ServiceError

    if isinstance(exc, ServiceError):
        set_rollback()
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return Response(exc.body(), status=exc.status, headers=headers)
    if is_database_outage(exc):
        set_rollback()
        return Response(
            {"detail": DATABASE_UNAVAILABLE},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge(
            "Request body is larger than the limit; send at most 1,000 events per request."
        )
    return drf_exception_handler(exc, context)

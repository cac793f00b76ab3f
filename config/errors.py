"""Error answers outside DRF's views: JSON under /api/, the HTML templates for pages.

Database outages (an OperationalError or InterfaceError: PostgreSQL restarting, a connection
dropped, a fail-over; or a write refused by a read-only database or a hot standby, SQLSTATE 25006)
are not bugs in the request: every API endpoint answers them 503 with a JSON `detail` and
`Retry-After`, so clients back off and retry instead of reading an HTML "Server Error (500)".
"""

from __future__ import annotations

import sys

from django.db import InterfaceError, InternalError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

# Seconds a client is asked to wait after a database outage: a PostgreSQL restart or a fail-over
# usually takes a few seconds; clients are expected to back off further on repeated 503s.
RETRY_AFTER_SECONDS = 5

DATABASE_UNAVAILABLE = (
    "The database is unavailable or read-only for the moment; retry after Retry-After seconds. "
    "Nothing from a refused request is half-written, and ingestion is idempotent by event_id, so "
    "resending the same request is safe."
)

_READ_ONLY_SQLSTATE = "25006"  # read_only_sql_transaction


def is_database_outage(exc: BaseException | None) -> bool:
    """True for a database that cannot be reached or refuses writes, not for a bad query."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    if isinstance(exc, InternalError):
        cause = exc.__cause__
        return getattr(cause, "sqlstate", None) == _READ_ONLY_SQLSTATE or "read-only transaction" in str(exc)
    return False


def is_api_path(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def database_unavailable_response() -> JsonResponse:
    response = JsonResponse({"detail": DATABASE_UNAVAILABLE}, status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_path(request):
        return JsonResponse({"detail": "Not found: no such API endpoint. See /api/docs/."}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """Django calls this while handling the uncaught exception, so sys.exc_info() names it."""
    if is_api_path(request):
        if is_database_outage(sys.exc_info()[1]):
            return database_unavailable_response()
        return JsonResponse(
            {"detail": "Server error: the request failed on our side and has been logged. Retry later."},
            status=500,
        )
    return defaults.server_error(request)

"""Database faults on the JSON API (issue 10, findings 2 and 3), injected for real.

The fault is a read-only database *session*: `SET SESSION CHARACTERISTICS AS TRANSACTION READ
ONLY` on PostgreSQL, `PRAGMA query_only` on SQLite, on the test's own connection (the test client
runs in this process, on this connection). The database refuses every write from then on, as a
hot standby or a failing-over primary does; other tests' connections are not touched.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from django.db import connection
from rest_framework.test import APIClient

from tests.conftest import event
from usage.models import DailyRollup, UsageEvent
from workspaces.models import ApiKey

pytestmark = pytest.mark.django_db(transaction=True)  # autocommit, as in production


@contextmanager
def read_only_database():
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        else:
            cursor.execute("PRAGMA query_only = ON")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
            else:
                cursor.execute("PRAGMA query_only = OFF")


@pytest.fixture
def raw_api(issued_key) -> APIClient:
    """A plain API client: the answers here are outages, not the documented operations."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued_key.secret}")
    return client


def test_the_read_only_fault_is_real(raw_api):
    from django.db import DatabaseError

    with read_only_database(), pytest.raises(DatabaseError):
        ApiKey.objects.update(name="renamed")


def test_reads_keep_working_on_a_read_only_database(raw_api, api_key):
    """Finding 2: authenticating must not need a write (last_used_at is recorded off the path)."""
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=None)  # due for a touch
    with read_only_database():
        allowance = raw_api.get("/api/v1/allowance")
        quote = raw_api.post("/api/v1/quote", event(), format="json")
    assert allowance.status_code == 200, allowance.content
    assert quote.status_code == 200, quote.content
    assert quote.json()["amount"] is not None


def test_ingestion_on_a_read_only_database_answers_503_json_and_stores_nothing(raw_api):
    """Finding 3: a JSON 503 with Retry-After, safe to retry: nothing is half-written."""
    with read_only_database():
        response = raw_api.post("/api/v1/events", {"events": [event(), event()]}, format="json")
    assert response.status_code == 503, response.content
    assert response["Content-Type"].startswith("application/json")
    assert int(response["Retry-After"]) > 0
    assert "retry" in response.json()["detail"].lower()
    assert UsageEvent.objects.count() == 0
    assert DailyRollup.objects.count() == 0
    # Once the database takes writes again, the same request is accepted, once.
    retried = raw_api.post("/api/v1/events", {"events": [event(event_id="evt-again")]}, format="json")
    assert retried.status_code == 200, retried.content
    assert UsageEvent.objects.count() == 1


# --- Error pages: JSON under /api/, HTML for pages ------------------------------------------------


def _raise_database_error(request):
    from django.db import OperationalError

    raise OperationalError("server closed the connection unexpectedly")


def _raise_bug(request):
    raise RuntimeError("a bug")


urlpatterns = None  # set below, so that this module can be the ROOT_URLCONF of the tests that raise


def _build_urlconf():
    from django.urls import include, path

    import config.urls

    global urlpatterns, handler404, handler500
    urlpatterns = [
        path("api/v1/test-broken", _raise_bug),
        path("api/v1/test-database-down", _raise_database_error),
        path("test-broken-page", _raise_bug),
        path("", include(config.urls.urlpatterns)),
    ]
    handler404 = getattr(config.urls, "handler404", None)
    handler500 = getattr(config.urls, "handler500", None)


_build_urlconf()


@pytest.fixture
def failing_client(settings):
    settings.ROOT_URLCONF = __name__
    settings.DEBUG = False
    settings.DEBUG_PROPAGATE_EXCEPTIONS = False
    client = APIClient()
    client.raise_request_exception = False
    return client


def test_an_unknown_api_path_answers_json_404(client):
    response = client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json() == {"detail": "Not found: no such API endpoint. See /api/docs/."}


def test_an_unknown_page_answers_the_html_404(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
    assert b"Not found" in response.content


def test_a_server_error_under_api_answers_json_500(failing_client):
    response = failing_client.get("/api/v1/test-broken")
    assert response.status_code == 500
    assert response["Content-Type"].startswith("application/json")
    assert "detail" in response.json()


def test_a_server_error_on_a_page_answers_html_500(failing_client):
    response = failing_client.get("/test-broken-page")
    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")
    assert b"Server error" in response.content


def test_a_database_error_outside_drf_under_api_answers_json_503(failing_client):
    response = failing_client.get("/api/v1/test-database-down")
    assert response.status_code == 503
    assert response["Content-Type"].startswith("application/json")
    assert int(response["Retry-After"]) > 0

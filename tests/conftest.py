"""Shared fixtures: workspaces, API keys, API clients and event bodies."""

from __future__ import annotations

import importlib
import io
import itertools
import json
from datetime import datetime, timezone

import pytest
from django.db import connection
from rest_framework.test import APIClient

from workspaces.services import api_key_create, workspace_create

_ids = itertools.count(1)


def on_postgres() -> bool:
    return connection.vendor == "postgresql"


@pytest.fixture
def workspace(db):
    return workspace_create(slug="acme", owner_email="owner@acme.test", name="Acme")


@pytest.fixture
def other_workspace(db):
    return workspace_create(slug="globex", owner_email="owner@globex.test", name="Globex")


@pytest.fixture
def issued_key(workspace):
    return api_key_create(workspace=workspace, name="prod servers")


@pytest.fixture
def api_key(issued_key):
    return issued_key.api_key


class SchemaCheckedClient(APIClient):
    """An API client whose every answer under /api/v1/ must be documented by the served OpenAPI
    schema: the status for that operation, and a JSON body that fits its schema (issue 9, 8)."""

    def request(self, **request):
        response = super().request(**request)
        path = request.get("PATH_INFO", "")
        if path.startswith("/api/v1/"):
            assert_documented(response, path, request.get("REQUEST_METHOD", "GET"))
        return response


def assert_documented(response, path: str, method: str) -> None:
    import json
    import re

    import jsonschema

    from tests.usage.openapi import served_schema

    schema = served_schema()
    template = next(
        (template for template in sorted(schema["paths"], key=lambda t: t.count("{"))  # literal paths first
         if re.fullmatch(re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)), path)),
        None,
    )
    assert template is not None, f"{path} is not in the OpenAPI schema"
    operation = schema["paths"][template].get(method.lower())
    assert operation is not None, f"{method} {template} is not in the OpenAPI schema"
    documented = operation["responses"].get(str(response.status_code))
    assert documented is not None, f"{method} {template} answered {response.status_code}, which its schema does not document"
    content_type = response.get("Content-Type", "")
    if not content_type.startswith("application/json") or not response.content:
        return
    body_schema = documented.get("content", {}).get("application/json", {}).get("schema")
    assert body_schema is not None, f"{method} {template} {response.status_code} answers JSON its schema does not describe"
    validator = jsonschema.Draft7Validator(_closed({**body_schema, "components": schema["components"]}))
    body = json.loads(response.content)
    errors = sorted(validator.iter_errors(body), key=lambda error: list(error.path))
    assert not errors, f"{method} {template} {response.status_code}: {errors[0].message} at {list(errors[0].path)} in {body!r:.300}"


def _closed(node):
    """The schema with every described object closed: a field the schema does not name fails."""
    if isinstance(node, list):
        return [_closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _closed(value) for key, value in node.items()}
    if "properties" in node and "additionalProperties" not in node and "allOf" not in node:
        node["additionalProperties"] = False
    return node


def client_with(secret: str) -> APIClient:
    client = SchemaCheckedClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def api(issued_key) -> APIClient:
    """An API client holding the workspace's all-scopes key."""
    return client_with(issued_key.secret)


@pytest.fixture
def other_api(other_workspace) -> APIClient:
    return client_with(api_key_create(workspace=other_workspace, name="globex key").secret)


def event(**overrides) -> dict:
    """A valid generation event body (sd15, 30 steps, 512², $0.004) with a fresh event_id."""
    body = {
        "event_id": f"evt-{next(_ids)}",
        "occurred_at": "2026-11-20T12:00:00Z",
        "feature": "generation",
        "model": "sd15",
        "steps": 30,
        "width": 512,
        "height": 512,
    }
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not ...}


def ingest(workspace, api_key, events: list[dict], *, now: datetime | None = None) -> None:
    """Ingest `events` through the service as the API would (received `now`), each accepted."""
    from usage.services import events_ingest

    outcome = events_ingest(workspace=workspace, api_key=api_key, raw_events=events, now=now)
    assert all(r.status == "accepted" for r in outcome.results), [r.errors for r in outcome.results]


FIXED_NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


WSGI_HEADERS = ("Content-Type", "Content-Length", "Content-Security-Policy", "X-Content-Type-Options",
                "X-Frame-Options", "Referrer-Policy", "Cross-Origin-Opener-Policy", "WWW-Authenticate",
                "Retry-After")


def wsgi_call(
    handler, method: str, path: str, *, secret: str | None, body=None, content_type="application/json", **environ_extra
):
    """Call a WSGI application as gunicorn would: (status, the body parsed as JSON or else as text,
    the headers in WSGI_HEADERS)."""
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80", "HTTP_HOST": "127.0.0.1", "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(raw), "CONTENT_LENGTH": str(len(raw)), "CONTENT_TYPE": content_type,
    }  # fmt: skip
    environ.update(environ_extra)
    if secret is not None:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer["status"], answer["headers"] = int(status.split()[0]), dict(headers)

    content = b"".join(handler(environ, start_response))
    headers = {name: answer["headers"].get(name) for name in WSGI_HEADERS}
    try:
        parsed = json.loads(content) if content else None
    except ValueError:
        parsed = content.decode(errors="replace")
    return answer["status"], parsed, headers


def post_events(client: APIClient, events) -> dict:
    response = client.post("/api/v1/events", {"events": list(events)}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture(autouse=True)
def _price_book_v1(request):
    """Transactional tests flush every table, the migrated price book too: put it back."""
    if "transactional_db" not in request.fixturenames and not any(
        m.kwargs.get("transaction") for m in request.node.iter_markers("django_db")
    ):
        yield
        return
    request.getfixturevalue("transactional_db")
    from django.apps import apps

    seed = importlib.import_module("billing.migrations.0002_seed_price_book_v1")
    seed.load(apps, None, app_label="pricing")
    yield


@pytest.fixture(autouse=True)
def _fresh_price_book_cache():
    """Each test's database starts from its own state (rolled back or flushed): so do the caches
    of price books and API keys."""
    from pricing.selectors import price_book_cache_clear
    from workspaces.services import key_cache_forget

    price_book_cache_clear()
    key_cache_forget()
    yield
    price_book_cache_clear()
    key_cache_forget()


@pytest.fixture(autouse=True)
def _fresh_throttles():
    """Throttle counters and sign-in lockouts live in the cache (Redis under `make test`): each
    test starts with none, whatever the tests before it sent."""
    from django.core.cache import cache

    from workspaces.throttling import _redis_client, reservations

    reservations.clear()
    client = _redis_client()
    if client is None:
        cache.clear()
    else:
        for pattern in ("*:thr:*", "*:login:*"):
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.delete(*keys)
    yield


# --- localstripe: one for the whole session -------------------------------------------------------


@pytest.fixture(scope="session")
def localstripe_server(tmp_path_factory):
    """One real localstripe for the session (tests/stripe_server.py), on a free port, with a store
    of its own; stopped at the end."""
    from tests.stripe_server import LocalStripe

    server = LocalStripe(tmp_path_factory.mktemp("localstripe") / "localstripe.log").start()
    yield server
    server.stop()


@pytest.fixture
def local_stripe(localstripe_server, settings):
    """localstripe emptied for this test; the server side (the stripe library) and the browser side
    (its Stripe.js stand-in at <localstripe>/js.stripe.com/v3/) both point at it."""
    from tests.stripe_server import SECRET_KEY

    localstripe_server.reset()
    settings.STRIPE_API_BASE = localstripe_server.url
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_PUBLISHABLE_KEY = "pk_test_dashboard"
    settings.STRIPE_JS_URL = f"{localstripe_server.url}/js.stripe.com/v3/"
    return localstripe_server

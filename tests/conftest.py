"""Shared fixtures: workspaces, API keys, API clients and event bodies."""

from __future__ import annotations

import importlib
import itertools
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


def client_with(secret: str) -> APIClient:
    client = APIClient()
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


FIXED_NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


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
    seed.load(apps, None)
    yield


@pytest.fixture(autouse=True)
def _fresh_price_book_cache():
    """Each test's database starts from its own state (rolled back or flushed): so does the cache."""
    from billing.selectors import price_book_cache_clear

    price_book_cache_clear()
    yield
    price_book_cache_clear()


@pytest.fixture(autouse=True)
def _fresh_throttles():
    """Throttle counters and sign-in lockouts live in the cache (Redis under `make test`): each
    test starts with none, whatever the tests before it sent."""
    from django.core.cache import cache

    from workspaces.throttling import _redis_client

    client = _redis_client()
    if client is None:
        cache.clear()
    else:
        for pattern in ("*:thr:*", "*:login:*"):
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.delete(*keys)
    yield

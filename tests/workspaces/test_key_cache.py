"""API keys are remembered per process for KEY_CACHE_SECONDS (issue 12: no database round trip to
authenticate on ingestion's hot path), and revocation still takes effect within that bound: at
once in the process that revoked, within a second in every other one (here: a revocation written
straight to the database, as another process's would be, and the real clock)."""

from __future__ import annotations

import time

from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.conftest import client_with
from workspaces import services, throttling
from workspaces.models import ApiKey
from workspaces.services import api_key_revoke


def allowance(secret: str) -> int:
    return client_with(secret).get("/api/v1/allowance").status_code


def test_a_known_key_authenticates_without_a_query(issued_key):
    assert allowance(issued_key.secret) == 200
    with CaptureQueriesContext(connection) as queries:
        assert services.api_key_authenticate(issued_key.secret).pk == issued_key.api_key.pk
    assert not [q for q in queries.captured_queries if "workspaces_apikey" in q["sql"]]


def test_a_wrong_secret_with_a_known_prefix_is_refused_from_the_cache_too(issued_key):
    assert services.api_key_authenticate(issued_key.secret) is not None
    assert services.api_key_authenticate(issued_key.secret[:-2] + "xx") is None


def test_revoking_in_this_process_takes_effect_at_once(issued_key):
    assert allowance(issued_key.secret) == 200
    api_key_revoke(api_key=issued_key.api_key)
    assert allowance(issued_key.secret) == 401


def test_a_revocation_by_another_process_takes_effect_within_a_second_of_the_real_clock(issued_key):
    assert allowance(issued_key.secret) == 200
    # Another process revokes: a plain UPDATE, no signal reaches this process.
    ApiKey.objects.filter(pk=issued_key.api_key.pk).update(revoked_at=timezone.now())
    deadline = time.monotonic() + services.KEY_CACHE_SECONDS + 0.5
    while allowance(issued_key.secret) == 200:
        assert time.monotonic() < deadline, "the revoked key still authenticated after the cache's bound"
        time.sleep(0.05)
    assert allowance(issued_key.secret) == 401


def test_the_throttle_counts_in_one_round_trip_on_redis():
    """The throttle's pipeline (INCRBY + EXPIRE) is used whenever the cache is Redis; it used to
    fall back to the generic add-then-incr (three round trips) because the cache proxy hid Redis."""
    client = throttling._redis_client()
    assert (client is not None) == bool(settings.REDIS_URL)

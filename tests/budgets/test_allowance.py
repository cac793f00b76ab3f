"""The hard limit: GET /allowance blocks from the first call after the crossing event is accepted,
with no worker involved, unblocks as soon as the budget is raised, and counts every event once.

Most tests are transactional so that ingestion really commits and its after-commit step (the Redis
counters, when REDIS_URL is set) runs as in production; on SQLite without Redis the allowance
reads the rollups."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from budgets import counters
from core.periods import current_period
from tests.budgets.conftest import spend_events
from tests.conftest import client_with, post_events
from workspaces.models import Scope
from workspaces.services import api_key_create, workspace_create

transactional = pytest.mark.django_db(transaction=True)


@pytest.fixture
def acme(transactional_db):
    workspace = workspace_create(slug="acme", owner_email="owner@acme.test")
    return workspace, api_key_create(workspace=workspace, name="generator")


def allowance(client) -> dict:
    response = client.get("/api/v1/allowance")
    assert response.status_code == 200, response.content
    return response.json()


def hard_budget(client, amount: str, **extra) -> dict:
    response = client.post("/api/v1/budgets", {"amount": amount, "hard_limit": True, **extra}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


@transactional
def test_without_a_hard_limit_everything_is_allowed(acme):
    _, key = acme
    api = client_with(key.secret)
    post_events(api, spend_events(15))
    api.post("/api/v1/budgets", {"amount": "10"}, format="json")  # a soft budget never blocks
    assert allowance(api) == {"allowed": True, "spend": "15.000000", "budget": None, "remaining": None, "reason": None}


@transactional
def test_the_call_after_the_crossing_event_is_blocked_then_raising_the_budget_unblocks(acme):
    _, key = acme
    api = client_with(key.secret)
    budget = hard_budget(api, "20")
    post_events(api, spend_events(15))
    assert allowance(api) == {"allowed": True, "spend": "15.000000", "budget": "20.000000", "remaining": "5.000000",
                              "reason": None}
    post_events(api, spend_events(5))  # the crossing event
    accepted = time.monotonic()
    answer = allowance(api)
    assert time.monotonic() - accepted < 1
    assert (answer["allowed"], answer["spend"], answer["remaining"]) == (False, "20.000000", "0.000000")
    assert answer["reason"].startswith("The workspace's monthly budget of 20.00 USD is reached (hard limit)")
    assert api.patch(f"/api/v1/budgets/{budget['id']}", {"amount": "30"}, format="json").status_code == 200
    assert allowance(api)["allowed"] is True
    assert api.patch(f"/api/v1/budgets/{budget['id']}", {"hard_limit": False}, format="json").status_code == 200
    assert allowance(api)["budget"] is None


@transactional
def test_duplicates_and_conflicts_do_not_count(acme):
    _, key = acme
    api = client_with(key.secret)
    hard_budget(api, "10")
    events = spend_events(5)
    post_events(api, events)
    allowance(api)  # builds the counter
    post_events(api, events)  # a retry: duplicates
    post_events(api, [dict(events[0], feature="captioning")])  # same id, other content: a conflict
    assert allowance(api)["spend"] == "5.000000"
    post_events(api, spend_events(5) + events)
    assert allowance(api)["allowed"] is False


@transactional
def test_a_key_budget_blocks_only_that_key(acme):
    workspace, key = acme
    other = api_key_create(workspace=workspace, name="batch")
    api, other_api = client_with(key.secret), client_with(other.secret)
    hard_budget(api, "10", api_key=key.api_key.display_prefix)
    hard_budget(api, "100")
    post_events(other_api, spend_events(50))
    post_events(api, spend_events(10))
    mine, theirs = allowance(api), allowance(other_api)
    assert (mine["allowed"], mine["spend"], mine["budget"]) == (False, "10.000000", "10.000000")
    assert mine["reason"].startswith("This API key's monthly budget of 10.00 USD")
    assert (theirs["allowed"], theirs["spend"], theirs["remaining"]) == (True, "60.000000", "40.000000")


@transactional
def test_last_months_spend_does_not_count(acme):
    _, key = acme
    api = client_with(key.secret)
    hard_budget(api, "10")
    post_events(api, spend_events(50, occurred_at="2024-06-10T10:00:00Z"))
    assert allowance(api)["allowed"] is True


@transactional
def test_a_member_session_or_no_key_is_not_the_allowance_caller(acme):
    workspace, key = acme
    assert APIClient().get("/api/v1/allowance").status_code == 401
    assert client_with("mbk_nope_nope").get("/api/v1/allowance").status_code == 401
    reader = api_key_create(workspace=workspace, name="r", scopes=[Scope.BUDGETS_WRITE])
    assert client_with(reader.secret).get("/api/v1/allowance").status_code == 403


@transactional
def test_counters_equal_the_rollups_under_concurrent_ingestion_and_rebuilds(acme):
    """Six clients post overlapping batches (duplicates included) while readers ask for the
    allowance and counters are dropped mid-way: at the end the counters equal the rollups."""
    workspace, key = acme
    keys = [key] + [api_key_create(workspace=workspace, name=f"k{n}") for n in range(2)]
    rng = random.Random(4)
    events = spend_events(300, cents=0, prefix="c")
    batches = [(keys[n % 3], rng.sample(events, 25)) for n in range(18)]

    def post(job):
        issued, batch = job
        try:
            post_events(client_with(issued.secret), batch)
        finally:
            connection.close()

    def read(_):
        try:
            for issued in keys:
                allowance(client_with(issued.secret))
            if settings.REDIS_URL and rng.random() < 0.3:  # as if a counter expired
                backend = counters._backend()
                for stale in backend.client.scan_iter(match=f"{counters.key_prefix()}:*:spend:*"):
                    backend.client.delete(stale)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        jobs = [pool.submit(post, job) for job in batches] + [pool.submit(read, n) for n in range(12)]
        for job in jobs:
            job.result()
    from django.utils import timezone

    period = current_period(timezone.now())
    for issued in keys:
        from_counters = counters.month_to_date(workspace.pk, issued.api_key.pk, period)
        from_rollups = counters._database_sums(workspace.pk, issued.api_key.pk, period)
        assert from_counters == from_rollups
    stored = counters._database_sums(workspace.pk, key.api_key.pk, period)[0]
    assert stored == 5_000_000 * len({e["event_id"] for _, batch in batches for e in batch})


def test_inside_a_transaction_that_has_not_committed_the_allowance_reads_the_database(api, workspace):
    """(Non-transactional test: ingestion's after-commit step never runs.) Still exact."""
    hard_budget(api, "10")
    post_events(api, spend_events(10))
    assert allowance(api)["allowed"] is False

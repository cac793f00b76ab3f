"""Prepaid-only plans: the allowance stops at the credit balance (billing.credits), with the same
machinery as the hard limit (the counters and the cached limits, dropped when the balance moves).
Transactional so that ingestion and grants really commit and their after-commit steps run."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal as D

from billing.credits import credits_grant
from billing.models import Plan, PlanAssignment
from tests.conftest import event, ingest


def test_a_prepaid_only_plan_stops_at_the_balance(transactional_db, workspace, api_key, api):
    plan = Plan.objects.create(name="Prepaid", prepaid_only=True)
    PlanAssignment.objects.create(workspace=workspace, plan=plan, effective_from=datetime(2020, 1, 1, tzinfo=timezone.utc))
    answer = api.get("/api/v1/allowance").json()
    assert answer["allowed"] is False and answer["reason"] == "credits_exhausted"
    credits_grant(workspace, D(2), actor="staff")
    answer = api.get("/api/v1/allowance").json()  # at once: the grant drops the cached limits
    assert answer["allowed"] is True and answer["budget"] == "2.000000"
    ingest(workspace, api_key, [event(quantity=499)])  # 1.996 USD
    assert api.get("/api/v1/allowance").json()["allowed"] is True
    ingest(workspace, api_key, [event(quantity=1)])  # 2.000 USD: the balance is reached
    answer = api.get("/api/v1/allowance").json()
    assert answer["allowed"] is False and answer["reason"] == "credits_exhausted" and answer["remaining"] == "0.000000"


def test_a_plan_that_is_not_prepaid_only_ignores_the_balance(transactional_db, workspace, api_key, api):
    ingest(workspace, api_key, [event(quantity=500)])
    answer = api.get("/api/v1/allowance").json()
    assert answer["allowed"] is True and answer["reason"] is None

"""GET /api/v1/usage: grouping, ranges and validation, read from the rollups."""

from __future__ import annotations

import pytest

from tests.conftest import event, post_events
from usage.models import DailyRollup

ADD_ON = dict(model=..., steps=..., width=..., height=...)


@pytest.fixture
def usage(api, issued_key, workspace):
    from tests.conftest import client_with
    from workspaces.services import api_key_create

    staging = client_with(api_key_create(workspace=workspace, name="staging").secret)
    post_events(
        api,
        [
            event(occurred_at="2026-10-31T23:59:59Z", quantity=2),  # sd15 30 512² → 0.008
            event(occurred_at="2026-11-01T00:00:00Z", model="sdxl", steps=50, width=1024, height=1824),  # 0.169
            event(occurred_at="2026-11-01T08:00:00+09:00", quantity=5),  # Oct 31 23:00 UTC → 0.020
            event(occurred_at="2026-11-02T10:00:00Z", feature="upscaling", quantity=3, **ADD_ON),  # 0.090
        ],
    )
    post_events(staging, [event(occurred_at="2026-11-02T11:00:00Z", steps=50)])  # 0.007
    return api


def get(api, **params):
    response = api.get("/api/v1/usage", params)
    assert response.status_code == 200, response.content
    return response.json()


def test_totals_with_no_grouping(usage):
    answer = get(usage, start="2026-10-01", end="2026-11-30")
    assert answer["rows"] == [{"quantity": 12, "amount": "0.294000"}]
    assert (answer["total"], answer["quantity"], answer["currency"]) == ("0.294000", 12, "USD")


def test_days_are_utc_and_end_is_inclusive(usage):
    answer = get(usage, start="2026-10-31", end="2026-11-01", group_by="day")
    assert answer["rows"] == [
        {"day": "2026-10-31", "quantity": 7, "amount": "0.028000"},
        {"day": "2026-11-01", "quantity": 1, "amount": "0.169000"},
    ]
    assert answer["total"] == "0.197000"
    assert get(usage, start="2026-11-02", end="2026-11-02")["total"] == "0.097000"


def test_group_by_month_and_feature(usage):
    rows = get(usage, start="2026-10-01", end="2026-11-30", group_by="month,feature")["rows"]
    assert rows == [
        {"month": "2026-10", "feature": "generation", "quantity": 7, "amount": "0.028000"},
        {"month": "2026-11", "feature": "generation", "quantity": 2, "amount": "0.176000"},
        {"month": "2026-11", "feature": "upscaling", "quantity": 3, "amount": "0.090000"},
    ]


def test_group_by_model_resolution_and_steps(usage):
    rows = get(usage, start="2026-10-01", end="2026-11-30", group_by="model,resolution,steps")["rows"]
    assert rows == [
        {"model": None, "resolution": None, "steps": None, "quantity": 3, "amount": "0.090000"},
        {"model": "sd15", "resolution": "512x512", "steps": 30, "quantity": 7, "amount": "0.028000"},
        {"model": "sd15", "resolution": "512x512", "steps": 50, "quantity": 1, "amount": "0.007000"},
        {"model": "sdxl", "resolution": "1024x1824", "steps": 50, "quantity": 1, "amount": "0.169000"},
    ]


def test_group_by_api_key(usage, issued_key):
    rows = get(usage, start="2026-10-01", end="2026-11-30", group_by="api_key")["rows"]
    by_name = {row["api_key_name"]: row for row in rows}
    assert by_name["prod servers"]["api_key"] == issued_key.api_key.display_prefix
    assert by_name["prod servers"]["amount"] == "0.287000"
    assert by_name["staging"]["amount"] == "0.007000"


def test_an_empty_range_has_no_rows_and_a_zero_total(usage):
    answer = get(usage, start="2025-01-01", end="2025-01-31", group_by="day")
    assert (answer["rows"], answer["total"]) == ([], "0.000000")


@pytest.mark.parametrize(
    "params, field",
    [
        ({"group_by": "day,colour"}, "group_by"),
        ({"start": "2026-11-31"}, "start"),
        ({"start": "yesterday"}, "start"),
        ({"start": "2026-11-10", "end": "2026-11-09"}, "end"),
        ({"start": "2020-01-01", "end": "2026-11-01"}, "end"),
    ],
)
def test_bad_queries_are_400_with_field_errors(usage, params, field):
    response = usage.get("/api/v1/usage", params)
    assert response.status_code == 400
    assert field in response.json()


def test_it_reads_rollups_not_raw_events(usage, django_assert_max_num_queries):
    """A rollup row changed behind the ledger's back shows: the API reads rollups."""
    DailyRollup.objects.filter(feature="upscaling").update(amount_micros=1_000_000)
    assert get(usage, start="2026-11-02", end="2026-11-02", group_by="feature")["rows"][1]["amount"] == "1.000000"

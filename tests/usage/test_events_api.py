"""POST /api/v1/events: validation, exactly-once storage, the answer's shape."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from tests.conftest import event, post_events
from usage.models import DailyRollup, UsageEvent


def stored(workspace):
    return UsageEvent.objects.filter(workspace=workspace)


def test_one_event_is_priced_and_stored_with_its_price_and_key(api, workspace, api_key):
    body = event(event_id="gen-1", model="sdxl", steps=50, width=1024, height=1824, metadata={"job": "j1"})
    response = api.post("/api/v1/events", body, format="json")
    assert response.status_code == 200
    assert response.json() == {
        "accepted": 1,
        "duplicates": 0,
        "conflicts": 0,
        "rejected": 0,
        "results": [{"index": 0, "event_id": "gen-1", "status": "accepted", "amount": "0.169000", "errors": {}}],
    }
    row = stored(workspace).get()
    assert (row.unit_price, row.amount, row.quantity) == (Decimal("0.169"), Decimal("0.169"), 1)
    assert row.price_book.version == 1
    assert row.api_key == api_key
    assert row.metadata == {"job": "j1"}
    assert row.occurred_at.isoformat() == "2026-11-20T12:00:00+00:00"


def test_a_batch_stores_valid_events_even_when_others_are_rejected(api, workspace):
    answer = post_events(
        api,
        [
            event(event_id="ok-1"),
            event(event_id="bad-1", feature="teleportation"),
            event(event_id="ok-2", feature="upscaling", model=..., steps=..., width=..., height=..., quantity=4),
            event(event_id="bad-2", steps=0),
        ],
    )
    assert (answer["accepted"], answer["rejected"]) == (2, 2)
    assert [r["status"] for r in answer["results"]] == ["accepted", "rejected", "accepted", "rejected"]
    assert answer["results"][2]["amount"] == "0.120000"
    assert "feature" in answer["results"][1]["errors"]
    assert answer["results"][3]["errors"] == {"steps": ["Must be between 1 and 1,000."]}
    assert sorted(stored(workspace).values_list("event_id", flat=True)) == ["ok-1", "ok-2"]


def test_a_bare_list_is_a_batch_too(api, workspace):
    response = api.post("/api/v1/events", [event(), event()], format="json")
    assert response.status_code == 200
    assert response.json()["accepted"] == 2


GENERATION_ONLY = dict(model=..., steps=..., width=..., height=...)


@pytest.mark.parametrize(
    "overrides, field, message",
    [
        ({"feature": "teleportation"}, "feature", "Unknown feature 'teleportation'"),
        ({"feature": None}, "feature", "Unknown feature None"),
        ({"model": "sd3"}, "model", "one of sd15, sdxl"),
        ({"model": ...}, "model", "Required for generation"),
        ({"steps": ...}, "steps", "Required for generation"),
        ({"width": ...}, "width", "Required for generation"),
        ({"height": None}, "height", "Required for generation"),
        ({"steps": 0}, "steps", "between 1 and 1,000"),
        ({"steps": 1001}, "steps", "between 1 and 1,000"),
        ({"steps": 30.5}, "steps", "whole number"),
        ({"steps": "30"}, "steps", "whole number"),
        ({"width": 63}, "width", "between 64 and 8,192"),
        ({"height": 8193}, "height", "between 64 and 8,192"),
        ({"quantity": 0}, "quantity", "between 1 and 100,000"),
        ({"quantity": -3}, "quantity", "between 1 and 100,000"),
        ({"quantity": 100_001}, "quantity", "between 1 and 100,000"),
        ({"quantity": True}, "quantity", "whole number"),
        ({"quantity": 1e300}, "quantity", "between 1 and 100,000"),
        ({"composition_control": "yes"}, "composition_control", "true or false"),
        ({"spot": 1}, "spot", "true or false"),
        ({"occurred_at": "2026-11-20T12:00:00"}, "occurred_at", "UTC offset"),
        ({"occurred_at": "yesterday"}, "occurred_at", "Not an ISO 8601 instant"),
        ({"occurred_at": 1764000000}, "occurred_at", "Required"),
        ({"occurred_at": ...}, "occurred_at", "Required"),
        ({"occurred_at": "2019-06-01T00:00:00Z"}, "occurred_at", "before the first price book"),
        ({"event_id": ""}, "event_id", "non-empty"),
        ({"event_id": "   "}, "event_id", "non-empty"),
        ({"event_id": ...}, "event_id", "Required"),
        ({"event_id": 42}, "event_id", "non-empty string"),
        ({"event_id": "x" * 129}, "event_id", "At most 128"),
        ({"event_id": "bad\x00id"}, "event_id", "control characters"),
        ({"metadata": ["a"]}, "metadata", "JSON object"),
        ({"metadata": {"blob": "x" * 5000}}, "metadata", "4,096 bytes"),
        ({"metadata": {"note": "nul\x00"}}, "metadata", "NUL"),
        ({"stpes": 30}, "stpes", "Unknown field"),
        ({"feature": "upscaling", "model": "sdxl", "steps": ..., "width": ..., "height": ...}, "model", "Only for generation"),
        ({"feature": "training", "composition_control": True, **GENERATION_ONLY}, "composition_control", "Only for generation"),
    ],
)
def test_bad_events_are_rejected_with_field_errors(api, workspace, overrides, field, message):
    answer = post_events(api, [event(**overrides), event(event_id="fine")])
    bad, good = answer["results"]
    assert bad["status"] == "rejected"
    assert bad["amount"] is None
    assert message in " ".join(bad["errors"][field]), bad["errors"]
    assert good["status"] == "accepted"
    assert list(stored(workspace).values_list("event_id", flat=True)) == ["fine"]


def test_a_non_object_item_is_rejected_not_a_500(api, workspace):
    answer = post_events(api, ["gen-1", 3, None, event(event_id="fine")])
    assert [r["status"] for r in answer["results"]] == ["rejected"] * 3 + ["accepted"]
    assert answer["results"][0]["errors"] == {"non_field_errors": ["Each event must be a JSON object."]}


def test_occurred_at_bounds(api, workspace):
    now = timezone.now()
    answer = post_events(
        api,
        [
            event(event_id="soon", occurred_at=(now + timedelta(minutes=4)).isoformat()),
            event(event_id="too-far", occurred_at=(now + timedelta(minutes=6)).isoformat()),
            event(event_id="paris", occurred_at="2026-11-20T13:00:00+01:00"),
        ],
    )
    assert [r["status"] for r in answer["results"]] == ["accepted", "rejected", "accepted"]
    assert "5 minutes in the future" in answer["results"][1]["errors"]["occurred_at"][0]
    assert stored(workspace).get(event_id="paris").occurred_at.isoformat() == "2026-11-20T12:00:00+00:00"


@pytest.mark.parametrize(
    "body, content_type, status, message",
    [
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b"", "application/json", 400, "Empty body"),
        (b"\xff\xfe", "application/json", 400, "not valid JSON"),
        (b"\xc3\x28{}", "application/json", 400, "not"),
        (b'"an event"', "application/json", 400, "Send a JSON event object"),
        (b"42", "application/json", 400, "Send a JSON event object"),
        (b"[]", "application/json", 400, "The batch is empty"),
        (b'{"events": []}', "application/json", 400, "The batch is empty"),
        (b'{"events": {"event_id": "x"}}', "application/json", 400, "must be a list"),
        (b'{"events": [], "extra": 1}', "application/json", 400, "no other keys"),
    ],
)
def test_a_bad_envelope_is_a_clear_400(api, workspace, body, content_type, status, message):
    response = api.generic("POST", "/api/v1/events", body, content_type=content_type)
    assert response.status_code == status
    assert message in response.json()["detail"]
    assert not stored(workspace).exists()


def test_more_than_1000_events_is_413(api, workspace):
    response = api.post("/api/v1/events", {"events": [event() for _ in range(1001)]}, format="json")
    assert response.status_code == 413
    assert "at most 1,000" in response.json()["detail"]
    assert not stored(workspace).exists()


def test_exactly_1000_events_are_accepted(api, workspace):
    answer = post_events(api, [event() for _ in range(1000)])
    assert answer["accepted"] == 1000
    assert stored(workspace).count() == 1000


def test_a_body_over_the_size_limit_is_413(api, workspace, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    response = api.post("/api/v1/events", {"events": [event(metadata={"x": "y" * 3000}) for _ in range(5)]}, format="json")
    assert response.status_code == 413
    assert not stored(workspace).exists()


def test_a_retry_is_a_duplicate_reporting_the_stored_amount(api, workspace):
    body = event(event_id="gen-7", model="sdxl", width=1024, height=1024, quantity=2)
    first = post_events(api, [body])
    again = post_events(api, [body])
    assert first["results"][0] == {"index": 0, "event_id": "gen-7", "status": "accepted", "amount": "0.064000", "errors": {}}
    assert again["duplicates"] == 1 and again["accepted"] == 0
    assert again["results"][0]["status"] == "duplicate"
    assert again["results"][0]["amount"] == "0.064000"
    assert stored(workspace).count() == 1
    rollup = DailyRollup.objects.get(workspace=workspace)
    assert (rollup.quantity, rollup.amount_micros, rollup.events) == (2, 64_000, 1)


def test_a_retry_written_differently_is_still_a_duplicate(api, workspace):
    post_events(api, [event(event_id="e", metadata={"a": 1, "b": 2})])
    answer = post_events(
        api,
        [
            {
                "metadata": {"b": 2, "a": 1},
                "height": 512, "width": 512, "steps": 30, "model": "sd15",
                "feature": "generation", "quantity": 1, "spot": False, "composition_control": False,
                "occurred_at": "2026-11-20T13:00:00+01:00",
                "event_id": "e",
            }
        ],
    )
    assert answer["results"][0]["status"] == "duplicate"


def test_the_same_event_id_twice_in_one_batch_is_stored_once(api, workspace):
    body = event(event_id="twice")
    answer = post_events(api, [body, body, event(event_id="twice", steps=50)])
    assert [r["status"] for r in answer["results"]] == ["accepted", "duplicate", "conflict"]
    assert answer["results"][1]["amount"] == "0.004000"
    assert stored(workspace).count() == 1
    assert DailyRollup.objects.get(workspace=workspace).quantity == 1


def test_a_reused_event_id_with_other_content_is_a_conflict_and_changes_nothing(api, workspace):
    post_events(api, [event(event_id="gen-9", quantity=1)])
    answer = post_events(api, [event(event_id="gen-9", quantity=5)])
    result = answer["results"][0]
    assert result["status"] == "conflict"
    assert answer["conflicts"] == 1
    assert result["amount"] is None
    assert "different content" in result["errors"]["event_id"][0]
    assert stored(workspace).get().quantity == 1
    assert DailyRollup.objects.get(workspace=workspace).quantity == 1


def test_event_ids_are_unique_per_workspace_not_globally(api, other_api, workspace, other_workspace):
    assert post_events(api, [event(event_id="shared-id")])["accepted"] == 1
    assert post_events(other_api, [event(event_id="shared-id", quantity=3)])["accepted"] == 1
    assert stored(workspace).get().quantity == 1
    assert stored(other_workspace).get().quantity == 3


def test_rejected_validation_never_500s_on_hostile_values(api, workspace):
    hostile = [
        {"event_id": {"nested": True}, "feature": ["generation"], "occurred_at": None},
        {"event_id": "x", "feature": "generation", "model": {"sd15": 1}, "steps": [], "width": {}, "height": "∞",
         "occurred_at": "2026-13-45T99:99:99Z"},
        {"event_id": "y", "feature": "generation", "model": "sd15", "steps": 10**400, "width": 512, "height": 512,
         "occurred_at": "2026-11-20T12:00:00Z"},
    ]
    response = api.generic("POST", "/api/v1/events", __import__("json").dumps({"events": hostile}), content_type="application/json")
    assert response.status_code == 200
    assert response.json()["rejected"] == 3

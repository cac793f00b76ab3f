"""The Python client's pure parts: local validation of events, Retry-After, event ids, the install."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from meterboard import EventError, event_body, new_event_id
from meterboard._core import retry_after_seconds

SD15 = dict(model="sd15", steps=30, width=512, height=512)


NAIVE = datetime(2026, 11, 25, 10, 0)


@pytest.mark.parametrize(
    "feature, fields, field",
    [
        ("generation", dict(SD15, model="sd3"), "model"),
        ("generation", dict(SD15, steps=0), "steps"),
        ("generation", dict(SD15, width=32), "width"),
        ("generation", {"model": "sd15", "steps": 30, "width": 512}, "height"),
        ("generation", dict(SD15, stpes=30), "stpes"),
        ("generation", dict(SD15, quantity=0), "quantity"),
        ("generation", dict(SD15, quantity=True), "quantity"),
        ("generation", dict(SD15, event_id=""), "event_id"),
        ("generation", dict(SD15, event_id="a\nb"), "event_id"),
        ("generation", dict(SD15, event_id="x" * 129), "event_id"),
        ("generation", dict(SD15, occurred_at=NAIVE), "occurred_at"),
        ("generation", dict(SD15, metadata={"notes": "x" * 4_100}), "metadata"),
        ("generation", dict(SD15, metadata=["not", "an", "object"]), "metadata"),
        ("upscaling", {"model": "sdxl"}, "model"),
        ("video", {}, "feature"),
    ],
)
def test_what_the_server_would_reject_is_refused_before_it_is_queued(feature, fields, field):
    with pytest.raises(EventError) as refused:
        event_body(feature, **fields)
    assert field in refused.value.errors


def test_retry_after_as_an_http_date():
    now = time.time()
    moment = datetime.fromtimestamp(now, timezone.utc) + timedelta(seconds=30)
    assert 28 <= retry_after_seconds(format_datetime(moment, usegmt=True), now=lambda: now) <= 30
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_event_ids_are_time_ordered_uuid7():
    ids = [new_event_id() for _ in range(5_000)]
    assert ids == sorted(ids) and len(set(ids)) == 5_000
    assert {uuid.UUID(event_id).version for event_id in ids} == {7}
    assert abs((uuid.UUID(ids[0]).int >> 80) - time.time() * 1000) < 5_000


def test_the_package_is_installed_from_clients_python():
    import meterboard

    assert meterboard.__file__.endswith("clients/python/meterboard/__init__.py")


"""notifications.publish: the interface other apps call inside their transaction."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from decimal import Decimal

import pytest

import notifications
from notifications.models import Endpoint, Event, EventDelivery
from notifications.schemas import UnknownEventType, data_errors

CREATED = datetime(2026, 11, 1, 0, 5, tzinfo=timezone.utc)
STATEMENT = {"statement_id": 7, "period": "2026-10", "total": Decimal("12.500000"), "tax": Decimal("0.000000"),
             "amount_due_cents": 1250, "currency": "USD", "finalized_at": "2026-11-01T00:05:00Z"}  # fmt: skip


def test_publish_stores_a_versioned_event_with_a_stable_id(workspace):
    event = notifications.publish(workspace.pk, "statement.finalized", STATEMENT, key="7", created=CREATED)
    assert re.fullmatch(r"evt_[0-9A-HJKMNP-TV-Z]{26}", event.id)
    stored = Event.objects.get()
    assert (stored.id, stored.type, stored.version, stored.created) == (event.id, "statement.finalized", 1, CREATED)
    assert stored.data["total"] == "12.500000"  # money as a string, never a float
    assert stored.payload() == {"id": event.id, "type": "statement.finalized", "version": 1,
                                "created": "2026-11-01T00:05:00Z", "data": stored.data}  # fmt: skip
    assert data_errors("statement.finalized", 1, stored.data) == []


def test_publishing_the_same_key_twice_creates_nothing(workspace, other_workspace):
    first = notifications.publish(workspace.pk, "statement.finalized", STATEMENT, key="7")
    assert notifications.publish(workspace.pk, "statement.finalized", {**STATEMENT, "total": "1.000000"}, key="7") is None
    assert Event.objects.get().data["total"] == first.data["total"] == "12.500000"
    # The key is per workspace and type.
    assert notifications.publish(other_workspace.pk, "statement.finalized", STATEMENT, key="7") is not None
    assert notifications.publish(workspace.pk, "invoice.created", {}, key="7") is not None
    assert Event.objects.count() == 3


def test_an_unknown_type_is_refused(workspace):
    with pytest.raises(UnknownEventType):
        notifications.publish(workspace.pk, "statement.closed", STATEMENT, key="7")
    assert not Event.objects.exists()


def test_a_delivery_is_scheduled_to_each_subscribed_endpoint(workspace, other_workspace):
    everything = Endpoint.objects.create(workspace=workspace, url="https://a.example/", secret="whsec_a", event_types=["*"])
    statements = Endpoint.objects.create(workspace=workspace, url="https://b.example/", secret="whsec_b",
                                         event_types=["statement.finalized"])  # fmt: skip
    Endpoint.objects.create(workspace=workspace, url="https://c.example/", secret="whsec_c", event_types=["payment.failed"])
    Endpoint.objects.create(workspace=workspace, url="https://d.example/", secret="whsec_d", event_types=["*"], active=False)
    Endpoint.objects.create(workspace=other_workspace, url="https://e.example/", secret="whsec_e", event_types=["*"])
    event = notifications.publish(workspace.pk, "statement.finalized", STATEMENT, key="7", created=CREATED)
    deliveries = EventDelivery.objects.filter(event=event)
    assert {d.endpoint_id for d in deliveries} == {everything.pk, statements.pk}
    assert {(d.status, d.order_at) for d in deliveries} == {("pending", CREATED)}
    notifications.publish(workspace.pk, "statement.finalized", STATEMENT, key="7")
    assert EventDelivery.objects.count() == 2


def test_every_schema_is_a_valid_json_schema_and_every_type_has_a_current_version():
    import jsonschema

    from notifications.schemas import CURRENT_VERSION, EVENT_TYPES, SCHEMAS

    for (event_type, version), schema in SCHEMAS.items():
        jsonschema.validators.validator_for(schema).check_schema(schema)
        assert version >= 1 and event_type in EVENT_TYPES
    assert all((event_type, CURRENT_VERSION[event_type]) in SCHEMAS for event_type in EVENT_TYPES)
    # A payload that breaks its schema is caught: money as a float, a missing field.
    assert data_errors("statement.finalized", 1, {**STATEMENT, "total": 12.5, "tax": "0.000000"})
    assert data_errors("payment.failed", 1, {"statement_id": 1})

"""Input and output of the event stream's API (notifications.apis)."""

from __future__ import annotations

from rest_framework import serializers

from core.webhooks import MAX_URL_LENGTH

from .models import ALL_TYPES, Endpoint, EventDelivery
from .schemas import EVENT_TYPES

MAX_ID = 2**63 - 1


class StrictSerializer(serializers.Serializer):
    """Unknown fields are errors, not silently dropped."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return value


class EndpointInputSerializer(StrictSerializer):
    """POST (url required) and PATCH (partial: only the fields sent)."""

    url = serializers.CharField(max_length=MAX_URL_LENGTH, help_text="https://… ; its host must resolve to public addresses")
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=[*EVENT_TYPES, ALL_TYPES]), max_length=len(EVENT_TYPES) + 1,
        default=[ALL_TYPES], help_text=f'The types to receive, or ["{ALL_TYPES}"] for every type (the default)',
    )  # fmt: skip
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    active = serializers.BooleanField(required=False, help_text="Inactive: events queue up and are sent once active again")


class EndpointSerializer(serializers.ModelSerializer):
    secret = serializers.SerializerMethodField(help_text="Only in the answer that created the endpoint")

    class Meta:
        model = Endpoint
        fields = ["id", "url", "event_types", "description", "active", "created_at", "secret"]

    def get_secret(self, endpoint) -> str | None:
        return self.context.get("secrets", {}).get(endpoint.pk)


class EventSerializer(serializers.Serializer):
    """An event as receivers get it."""

    id = serializers.CharField()
    type = serializers.CharField()
    version = serializers.IntegerField()
    created = serializers.CharField(help_text="RFC 3339, UTC")
    data = serializers.DictField(help_text="The type's schema: GET /api/v1/event-types")


class EventDeliverySerializer(serializers.ModelSerializer):
    """One delivery of an event to one endpoint (a replay is one more)."""

    id = serializers.SerializerMethodField(help_text="As in the Meterboard-Delivery header: evd_<number>")
    event = serializers.CharField(source="event_id")
    endpoint = serializers.IntegerField(source="endpoint_id", help_text="The webhook endpoint's id")
    replay = serializers.BooleanField(help_text="A manual replay, sent after what the endpoint had queued")
    next_attempt_at = serializers.DateTimeField(allow_null=True, help_text="When the next attempt is due; null once settled")

    class Meta:
        model = EventDelivery
        fields = ["id", "event", "endpoint", "status", "replay", "attempts", "next_attempt_at", "delivered_at", "last_error",
                  "created_at"]  # fmt: skip
        read_only_fields = fields

    def get_id(self, delivery) -> str:
        return f"evd_{delivery.pk}"


class EventDetailSerializer(EventSerializer):
    """An event as receivers get it, with its deliveries: GET /api/v1/events/<id>."""

    deliveries = EventDeliverySerializer(many=True, help_text="Each endpoint's delivery, in the order they are made")


class EventReplayInputSerializer(StrictSerializer):
    endpoint = serializers.IntegerField(min_value=1, max_value=MAX_ID, help_text="An active webhook endpoint of the workspace")


class EventsLogQuerySerializer(StrictSerializer):
    after = serializers.RegexField(r"^evt_[0-9A-Z]{26}$", required=False, help_text="The last event id already seen")
    type = serializers.CharField(required=False, help_text="Only these types, comma-separated")
    limit = serializers.IntegerField(min_value=1, max_value=500, default=100)
    workspace = serializers.SlugField(required=False, max_length=64, help_text="Session callers: the workspace slug")

    def validate_type(self, value: str) -> list[str]:
        types = [item.strip() for item in value.split(",") if item.strip()]
        unknown = sorted(set(types) - set(EVENT_TYPES))
        if unknown:
            raise serializers.ValidationError(f"Unknown event type(s): {', '.join(unknown)}.")
        return types


class EventsLogSerializer(serializers.Serializer):
    data = EventSerializer(many=True)
    has_more = serializers.BooleanField()
    next_after = serializers.CharField(allow_null=True, help_text="Pass as `after` to get the next events")


class EventTypeSerializer(serializers.Serializer):
    type = serializers.CharField()
    version = serializers.IntegerField()
    current = serializers.BooleanField(help_text="The version producers send now")
    description = serializers.CharField()
    schema = serializers.DictField(help_text="JSON Schema (2020-12) of the event's `data`")

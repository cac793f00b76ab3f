"""Serializers for the usage API: the query of GET /usage, and the shapes the OpenAPI schema
shows. Event bodies are checked by usage.validation (same rules, faster for 1,000-event
batches); EventSerializer documents them."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from rest_framework import serializers

from core.money import CURRENCY, decimal_text
from pricing.rules import FEATURES, MODELS

from .selectors import DAYS_BOUNDS_MESSAGE, EARLIEST_DAY, GROUP_BY_CHOICES, LATEST_DAY
from .services import ACCEPTED, CONFLICT, DUPLICATE, REJECTED
from .validation import MAX_EVENT_ID_LENGTH, MAX_QUANTITY, MAX_SIDE, MAX_STEPS, MIN_SIDE

MAX_RANGE_DAYS = 731


class EventSerializer(serializers.Serializer):
    """One usage event (documentation of the body checked by usage.validation.parse_event)."""

    event_id = serializers.CharField(max_length=MAX_EVENT_ID_LENGTH, help_text="Your idempotency id, unique per workspace")
    occurred_at = serializers.DateTimeField(help_text="ISO 8601 with offset; at most 5 minutes in the future")
    feature = serializers.ChoiceField(choices=FEATURES)
    quantity = serializers.IntegerField(min_value=1, max_value=MAX_QUANTITY, default=1)
    model = serializers.ChoiceField(choices=MODELS, required=False, help_text="generation only")
    steps = serializers.IntegerField(min_value=1, max_value=MAX_STEPS, required=False, help_text="generation only")
    width = serializers.IntegerField(min_value=MIN_SIDE, max_value=MAX_SIDE, required=False, help_text="generation only")
    height = serializers.IntegerField(min_value=MIN_SIDE, max_value=MAX_SIDE, required=False, help_text="generation only")
    composition_control = serializers.BooleanField(default=False, help_text="generation only")
    spot = serializers.BooleanField(default=False)
    metadata = serializers.DictField(required=False, help_text="Free-form JSON object, at most 4 KB")


class QuoteRequestSerializer(EventSerializer):
    event_id = serializers.CharField(max_length=MAX_EVENT_ID_LENGTH, required=False)
    occurred_at = serializers.DateTimeField(required=False, help_text="Default: now")


class EventBatchSerializer(serializers.Serializer):
    events = EventSerializer(many=True, help_text="1 to 1,000 events")


class EventResultSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="The event's position in the batch, from 0")
    event_id = serializers.CharField(
        allow_null=True,
        max_length=MAX_EVENT_ID_LENGTH,
        help_text=(
            "The event_id as sent, when it is a string of at most 128 characters and valid Unicode; "
            "otherwise null (the event is rejected; `index` identifies it)"
        ),
    )
    status = serializers.ChoiceField(choices=["accepted", "duplicate", "conflict", "rejected"])
    amount = serializers.DecimalField(max_digits=18, decimal_places=6, allow_null=True)
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


class IngestResponseSerializer(serializers.Serializer):
    """Of an IngestOutcome. The fields are the answer's schema; `to_representation` writes them
    directly, because a batch has up to 1,000 results and this is ingestion's hot path (the
    suite's SchemaCheckedClient checks every answer against the fields)."""

    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    conflicts = serializers.IntegerField()
    rejected = serializers.IntegerField()
    results = EventResultSerializer(many=True)

    def to_representation(self, outcome):
        texts: dict = {}  # a batch has a few distinct amounts: each written once

        def amount(value):
            text = texts.get(value)
            if text is None:
                text = texts[value] = decimal_text(value)
            return text

        return {
            "accepted": outcome.count(ACCEPTED),
            "duplicates": outcome.count(DUPLICATE),
            "conflicts": outcome.count(CONFLICT),
            "rejected": outcome.count(REJECTED),
            "results": [
                {"index": r.index, "event_id": r.event_id, "status": r.status, "amount": amount(r.amount), "errors": r.errors}
                for r in outcome.results
            ],
        }


class QuoteSerializer(serializers.Serializer):
    """Of a pricing.rules.Price."""

    unit_price = serializers.DecimalField(max_digits=14, decimal_places=6)
    quantity = serializers.IntegerField()
    amount = serializers.DecimalField(max_digits=18, decimal_places=6)
    currency = serializers.SerializerMethodField()
    price_book = serializers.IntegerField()

    def get_currency(self, price) -> str:
        return CURRENCY


class DetailErrorSerializer(serializers.Serializer):
    """The body of every error answer that is not about fields: 400 (the body as a whole),
    401, 403, 413, 415, 429."""

    detail = serializers.CharField(help_text="What is wrong, in words")


# POST /quote answers 400 either for the body as a whole ({"detail": ...}) or with the field
# errors of the one event it prices ({"field": ["message", ...]}).
QUOTE_400_SCHEMA = {
    "oneOf": [
        {"$ref": "#/components/schemas/DetailError"},
        {
            "type": "object",
            "description": "Field errors: each invalid field with its messages",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
    ]
}


class GroupByField(serializers.CharField):
    def to_internal_value(self, data):
        names = [name.strip() for name in super().to_internal_value(data).split(",") if name.strip()]
        unknown = [name for name in names if name not in GROUP_BY_CHOICES]
        if unknown:
            raise serializers.ValidationError(
                f"Unknown dimension(s) {', '.join(unknown)}; any of: {', '.join(GROUP_BY_CHOICES)}."
            )
        return tuple(dict.fromkeys(names))


class UsageQuerySerializer(serializers.Serializer):
    start = serializers.DateField(required=False, help_text="First UTC day (default: 1st of this month)")
    end = serializers.DateField(required=False, help_text="Last UTC day, inclusive (default: today)")
    group_by = GroupByField(required=False, default="", allow_blank=True, help_text=f"Comma-separated: {', '.join(GROUP_BY_CHOICES)}")
    workspace = serializers.SlugField(required=False, help_text="Session users in several workspaces")

    def validate(self, attrs):
        today = timezone.now().date()
        attrs.setdefault("start", today.replace(day=1))
        attrs.setdefault("end", today)
        out_of_bounds = {name: [DAYS_BOUNDS_MESSAGE] for name in ("start", "end") if not EARLIEST_DAY <= attrs[name] <= LATEST_DAY}
        if out_of_bounds:
            raise serializers.ValidationError(out_of_bounds)
        if attrs["end"] < attrs["start"]:
            raise serializers.ValidationError({"end": ["Must not be before start."]})
        if attrs["end"] - attrs["start"] > timedelta(days=MAX_RANGE_DAYS):
            raise serializers.ValidationError({"end": [f"The range is at most {MAX_RANGE_DAYS} days."]})
        return attrs


class UsageRowSerializer(serializers.Serializer):
    day = serializers.CharField(required=False)
    month = serializers.CharField(required=False)
    feature = serializers.CharField(required=False)
    model = serializers.CharField(required=False, allow_null=True)
    resolution = serializers.CharField(required=False, allow_null=True)
    steps = serializers.IntegerField(required=False, allow_null=True)
    api_key = serializers.CharField(required=False)
    api_key_name = serializers.CharField(required=False)
    quantity = serializers.IntegerField()
    amount = serializers.DecimalField(max_digits=20, decimal_places=6)


class UsageResponseSerializer(serializers.Serializer):
    """Of a usage.selectors.UsageSummary, with the query it answers in the context
    ("workspace", and the query's validated "params")."""

    workspace = serializers.SlugField(help_text="The workspace the figures are for")
    start = serializers.DateField()
    end = serializers.DateField()
    group_by = serializers.ListField(child=serializers.CharField())
    rows = UsageRowSerializer(many=True)
    quantity = serializers.IntegerField()
    total = serializers.DecimalField(max_digits=20, decimal_places=6)
    currency = serializers.CharField()

    def to_representation(self, summary):
        params = self.context["params"]
        return {
            "workspace": self.context["workspace"].slug,
            "start": params["start"].isoformat(),
            "end": params["end"].isoformat(),
            "group_by": list(params["group_by"]),
            "rows": [{**row, "amount": decimal_text(row["amount"])} for row in summary.rows],
            "quantity": summary.quantity,
            "total": decimal_text(summary.total),
            "currency": CURRENCY,
        }

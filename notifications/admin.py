"""Read-mostly admin of the event stream: events, endpoints (never their secret), deliveries with
every attempt."""

from django.contrib import admin

from .models import Endpoint, Event, EventDelivery, EventDeliveryAttempt


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["id", "workspace", "type", "version", "created", "key"]
    list_filter = ["type"]
    search_fields = ["id", "key", "workspace__slug"]
    raw_id_fields = ["workspace"]
    readonly_fields = ["id", "workspace", "type", "version", "created", "key", "data", "recorded_at"]


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    list_display = ["pk", "workspace", "url", "event_types", "active", "created_at"]
    list_filter = ["active"]
    search_fields = ["url", "workspace__slug"]
    raw_id_fields = ["workspace"]
    exclude = ["secret"]  # shown once, by the API or the events page
    readonly_fields = ["claimed_until"]


class AttemptInline(admin.TabularInline):
    model = EventDeliveryAttempt
    extra = 0
    can_delete = False
    readonly_fields = ["number", "started_at", "outcome", "http_status", "error", "duration_ms"]


@admin.register(EventDelivery)
class EventDeliveryAdmin(admin.ModelAdmin):
    list_display = ["pk", "event", "endpoint", "status", "attempts", "next_attempt_at", "replay"]
    list_filter = ["status", "replay"]
    raw_id_fields = ["event", "endpoint"]
    inlines = [AttemptInline]

"""Events of the stream, the workspace's webhook endpoints, and each event's delivery to each
endpoint with its attempts. README, "Event stream and workspace webhooks"."""

from __future__ import annotations

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from workspaces.models import Workspace

ALL_TYPES = "*"  # Endpoint.event_types: ["*"] subscribes to every type, today's and future ones


class Event(models.Model):
    """Something billing did, recorded once per (workspace, type, key) and never changed after.

    The id (`evt_` + a 26-character ULID of `created`) is stable: receivers de-duplicate on it."""

    id = models.CharField(primary_key=True, max_length=30)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    type = models.CharField(max_length=64)
    version = models.PositiveSmallIntegerField(default=1)
    created = models.DateTimeField(default=timezone.now)  # when it happened (delivery order)
    # The producer's idempotency key (a statement id, an invoice number, an alert id...).
    key = models.CharField(max_length=200)
    data = models.JSONField(encoder=DjangoJSONEncoder)
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created", "id"]
        constraints = [models.UniqueConstraint(fields=["workspace", "type", "key"], name="event_once_per_key")]
        indexes = [
            # The events log: a workspace's events in created order, after a cursor.
            models.Index(fields=["workspace", "created", "id"], name="event_ws_created"),
            # Retention (notifications.retention): the oldest events of every workspace first.
            models.Index(fields=["created"], name="event_created"),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.type}"

    def payload(self) -> dict:
        """What receivers get, and what the events log answers."""
        return {
            "id": self.id,
            "type": self.type,
            "version": self.version,
            "created": self.created.isoformat().replace("+00:00", "Z"),
            "data": self.data,
        }


class Endpoint(models.Model):
    """A URL of the workspace that receives the events of the types it subscribes to, signed with
    its secret (kept as is: signing needs it; the API shows it once, when it is created).

    An endpoint receives its events one at a time, in `created` order (`claimed_until`: an
    attempt is in progress)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="event_endpoints")
    url = models.CharField(max_length=2000)
    secret = models.CharField(max_length=64)
    event_types = models.JSONField(default=list)  # type names, or ["*"] for all
    description = models.CharField(max_length=200, blank=True, default="")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    claimed_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.url

    def subscribes_to(self, event_type: str) -> bool:
        return ALL_TYPES in self.event_types or event_type in self.event_types


class EventDelivery(models.Model):
    """One event to one endpoint. The schedule lives here (`next_attempt_at`), as for budget
    alerts: the sweep (notifications.delivery.endpoints_enqueue_due) finds what is due.

    Deliveries of one endpoint are made in (`order_at`, pk) order, one at a time: `order_at` is
    the event's `created`, or the time of a manual replay (which goes after what is queued)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        RETRYING = "retrying", "Failed, will retry"
        FAILED = "failed", "Failed (gave up)"

    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="deliveries")
    order_at = models.DateTimeField()
    replay = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)  # due from then; null once settled
    requeue_at = models.DateTimeField(null=True, blank=True)  # a task is coming for it until then
    requeues = models.PositiveIntegerField(default=0)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["order_at", "pk"]
        verbose_name_plural = "event deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["event", "endpoint"], condition=models.Q(replay=False), name="event_delivery_once"
            )
        ]
        indexes = [
            models.Index(
                fields=["endpoint", "order_at"], name="event_delivery_open",
                condition=models.Q(status__in=["pending", "retrying"]),
            )
        ]  # fmt: skip

    def __str__(self) -> str:
        return f"{self.event_id} to {self.endpoint_id}: {self.status}"


class EventDeliveryAttempt(models.Model):
    """Every attempt, saved STARTED before the POST and with its outcome after."""

    class Outcome(models.TextChoices):
        STARTED = "started", "Started"
        OK = "ok", "Delivered"
        HTTP_ERROR = "http_error", "Non-2xx answer"
        TIMEOUT = "timeout", "Timed out"
        ERROR = "error", "Error"
        REFUSED = "refused", "Refused (address not allowed)"
        ABANDONED = "abandoned", "Abandoned (worker stopped mid-attempt)"

    delivery = models.ForeignKey(EventDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.STARTED)
    http_status = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    duration_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}: {self.outcome}"

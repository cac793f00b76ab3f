"""Reads of the event stream: endpoints, the events log, and events with their deliveries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.db.models import Count, Prefetch, Q, QuerySet

from .models import Endpoint, Event, EventDelivery


def endpoints_of(workspace_id: int) -> QuerySet[Endpoint]:
    return Endpoint.objects.filter(workspace_id=workspace_id).order_by("pk")


def event_of(workspace_id: int, event_id: str) -> Event | None:
    return Event.objects.filter(workspace_id=workspace_id, pk=event_id).first()


def event_with_deliveries(workspace_id: int, event_id: str) -> Event | None:
    """The workspace's event with its deliveries (replays included) in the order they are made."""
    deliveries = EventDelivery.objects.order_by("order_at", "pk")
    return (
        Event.objects.filter(workspace_id=workspace_id, pk=event_id)
        .prefetch_related(Prefetch("deliveries", queryset=deliveries))
        .first()
    )


@dataclass(frozen=True)
class EventsPage:
    events: list[Event]
    has_more: bool


def events_log(workspace_id: int, *, after: Event | None = None, types: Sequence[str] = (), limit: int = 100) -> EventsPage:
    """The workspace's events in (created, id) order, those after `after` (a cursor: the last
    event of the previous page), of `types` if given."""
    events = Event.objects.filter(workspace_id=workspace_id).order_by("created", "id")
    if after is not None:
        events = events.filter(Q(created__gt=after.created) | Q(created=after.created, id__gt=after.id))
    if types:
        events = events.filter(type__in=list(types))
    found = list(events[: limit + 1])
    return EventsPage(found[:limit], len(found) > limit)


def recent_events(workspace_id: int, *, limit: int = 50, event_type: str | None = None) -> list[Event]:
    """The newest events first, each with its deliveries (and their attempts) prefetched."""
    events = Event.objects.filter(workspace_id=workspace_id).order_by("-created", "-id")
    if event_type:
        events = events.filter(type=event_type)
    deliveries = EventDelivery.objects.select_related("endpoint").prefetch_related("attempt_log").order_by("order_at", "pk")
    return list(events.prefetch_related(Prefetch("deliveries", queryset=deliveries))[:limit])


def deliveries_pending_count() -> dict[str, int]:
    """Deliveries not yet settled, by status (pending, retrying), every workspace's: one grouped
    COUNT over the open deliveries' partial index (/metrics reads it at each scrape)."""
    counts = dict.fromkeys((EventDelivery.Status.PENDING.value, EventDelivery.Status.RETRYING.value), 0)
    rows = (
        EventDelivery.objects.filter(status__in=list(counts)).order_by().values("status").annotate(n=Count("pk"))
    )
    counts.update({row["status"]: row["n"] for row in rows})
    return counts

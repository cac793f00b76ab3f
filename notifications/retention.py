"""Events are kept EVENT_RETENTION_DAYS (at least 7) after their `created`, then deleted with their
deliveries and attempts: beat's daily notifications-events-prune (config/schedule.py).

A delivery in flight is never cut short: an event with a delivery still pending or retrying stays
(a paused endpoint's queue included) and goes on a later run, once that delivery is settled.

Deleting an event forgets its (workspace, type, key), so `publish` with that key would record it
again. No producer does: each publishes in the transaction that creates its own row, itself unique
and kept (a statement, an invoice number, a payment attempt, an alert, an anomaly of a day, a
credit purchase, a numbered low-balance crossing), and never publishes for a row it finds already
there; a re-run (a month's close, an evaluation, a settlement) publishes nothing again.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from .models import Event, EventDelivery, EventDeliveryAttempt
from .services import event_id_time

MINIMUM_DAYS = 7  # a receiver down for a week still finds its events (retries last 24 hours)
BATCH = 5_000  # events per transaction: a backlog never holds its locks for long
_OPEN = (EventDelivery.Status.PENDING, EventDelivery.Status.RETRYING)


def retention_days() -> int:
    return max(MINIMUM_DAYS, settings.EVENT_RETENTION_DAYS)


def retention_cutoff(now: datetime | None = None) -> datetime:
    """Events created before this are past the retention."""
    return (now or timezone.now()) - timedelta(days=retention_days())


def is_past_retention(event_id: str, *, now: datetime | None = None) -> bool:
    """Whether an event id (found or not) was made for a time before the retention's cutoff:
    read from the id itself, so it says nothing of whether such an event exists."""
    made = event_id_time(event_id)
    return made is not None and made < retention_cutoff(now)


@dataclass(frozen=True)
class Pruned:
    events: int = 0
    deliveries: int = 0
    attempts: int = 0
    batches: int = 0  # transactions that deleted something

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


def events_prune(*, now: datetime | None = None, batch: int = BATCH) -> Pruned:
    """Delete the events past the retention with none of their deliveries pending or retrying,
    with their deliveries and attempts, `batch` events per transaction until none is left.
    Returns the counts.

    Idempotent, and safe with several runs at once (two beats, a run by hand): each transaction
    locks the events it deletes and skips those another run holds (FOR UPDATE SKIP LOCKED on
    PostgreSQL), so runs share the work instead of waiting on each other. A replay of an event
    being deleted waits for that lock and then finds no event (notifications.services.event_replay)."""
    before = retention_cutoff(now)
    pruned = Pruned()
    while True:
        with transaction.atomic():
            ids = list(_prunable(before)[:batch])
            if ids:
                pruned += _delete(ids)
        if len(ids) < batch:
            return pruned


def _prunable(before: datetime):
    """The ids of events created before `before` with no delivery in flight, oldest first, locked."""
    in_flight = EventDelivery.objects.filter(event=OuterRef("pk"), status__in=_OPEN)
    return (
        Event.objects.filter(created__lt=before)
        .filter(~Exists(in_flight))
        .order_by("created")
        .select_for_update(skip_locked=True)
        .values_list("pk", flat=True)
    )


def _delete(ids: list[str]) -> Pruned:
    """Children first, one statement each, no row loaded (Django's cascade would load every
    delivery and event, their JSON too): the attempts, the deliveries, the events."""
    attempt, delivery, event = (
        model._meta.db_table for model in (EventDeliveryAttempt, EventDelivery, Event)
    )
    marks = ", ".join(["%s"] * len(ids))
    counts = []
    with connection.cursor() as cursor:
        for statement in (
            f"DELETE FROM {attempt} WHERE delivery_id IN (SELECT id FROM {delivery} WHERE event_id IN ({marks}))",
            f"DELETE FROM {delivery} WHERE event_id IN ({marks})",
            f"DELETE FROM {event} WHERE id IN ({marks})",
        ):
            cursor.execute(statement, ids)
            counts.append(cursor.rowcount)
    attempts, deliveries, events = counts
    return Pruned(events, deliveries, attempts, 1)

"""Writes of the event stream: publishing events (and scheduling their deliveries), and the
workspace's webhook endpoints."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from .delivery import endpoint_enqueue
from .models import Endpoint, Event, EventDelivery
from .schemas import current_version

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


# The random part last used per millisecond (a few recent ones): ids made in one process for the
# same millisecond increase, so events published together keep their order (monotonic ULIDs).
_last_random: dict[int, int] = {}


def event_id_new(at: datetime) -> str:
    """`evt_` + a ULID: 48 bits of milliseconds since the epoch (of `at`) and 80 random bits in
    26 Crockford base-32 characters, so ids sort as the events' `created` (and, within one
    millisecond, as they were made in this process)."""
    ms = int(at.timestamp() * 1000)
    previous = _last_random.get(ms)
    random_part = secrets.randbits(79) if previous is None else previous + 1 + secrets.randbits(16)
    if len(_last_random) > 1000:
        _last_random.clear()
    _last_random[ms] = random_part
    value = (ms << 80) | (random_part & (2**80 - 1))
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "evt_" + "".join(reversed(chars))


@dataclass(frozen=True)
class Publication:
    """One event to publish (publish_many)."""

    workspace_id: int
    type: str
    data: dict
    key: str
    created: datetime | None = None


def publish(workspace_id: int, type: str, data: dict, *, key: str, created: datetime | None = None) -> Event | None:
    """Record an event (`created`, default now) in the caller's transaction, with a delivery to
    each active endpoint of the workspace subscribed to `type`, enqueued once it commits.

    Idempotent on (workspace, type, key): a second publish of the same key creates nothing and
    returns None (the first one's event stays as it was). An unknown type raises
    schemas.UnknownEventType. `data` is stored as JSON (Decimals and datetimes as strings)."""
    [event] = publish_many([Publication(workspace_id, type, data, key, created)])
    return event


def publish_many(publications: Sequence[Publication]) -> list[Event | None]:
    """publish() for many events in a few queries (a month's close publishes thousands): for
    each, the new event or None when its key was published before."""
    if not publications:
        return []
    now = timezone.now()
    events = []
    for item in publications:
        created = item.created or now
        events.append(
            Event(id=event_id_new(created), workspace_id=item.workspace_id, type=item.type,
                  version=current_version(item.type), created=created, key=item.key, data=_as_json(item.data), recorded_at=now)
        )  # fmt: skip
    with transaction.atomic():
        Event.objects.bulk_create(events, ignore_conflicts=True, batch_size=1000)
        # The ids are random: those found are the ones this call inserted, the rest were there.
        inserted = set(Event.objects.filter(pk__in=[event.pk for event in events]).values_list("pk", flat=True))
        new = [event for event in events if event.pk in inserted]
        deliveries = _deliveries_create(new, now)
    endpoint_ids = sorted({delivery.endpoint_id for delivery in deliveries})
    if endpoint_ids:
        transaction.on_commit(lambda: endpoints_enqueue(endpoint_ids))
    return [event if event.pk in inserted else None for event in events]


def _as_json(data: dict) -> dict:
    """`data` as receivers will read it: Decimals and datetimes as strings (DjangoJSONEncoder)."""
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def _deliveries_create(events: Iterable[Event], now: datetime) -> list[EventDelivery]:
    events = list(events)
    if not events:
        return []
    endpoints: dict[int, list[Endpoint]] = {}
    for endpoint in Endpoint.objects.filter(workspace_id__in={event.workspace_id for event in events}, active=True):
        endpoints.setdefault(endpoint.workspace_id, []).append(endpoint)
    deliveries = [
        EventDelivery(event=event, endpoint=endpoint, order_at=event.created, next_attempt_at=now, created_at=now)
        for event in events
        for endpoint in endpoints.get(event.workspace_id, ())
        if endpoint.subscribes_to(event.type)
    ]
    return EventDelivery.objects.bulk_create(deliveries, batch_size=1000)


def endpoints_enqueue(endpoint_ids: Iterable[int]) -> None:
    """Ask for the next delivery of each endpoint now (after a commit)."""
    for endpoint_id in endpoint_ids:
        endpoint_enqueue(endpoint_id)

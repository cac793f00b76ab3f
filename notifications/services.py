"""Writes of the event stream: publishing events (and scheduling their deliveries), and the
workspace's webhook endpoints."""

from __future__ import annotations

import json
import secrets
from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone as dt_timezone

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from core import metrics, webhooks
from core.errors import ServiceError
from core.locks import workspace_lock

from .delivery import endpoint_enqueue
from .models import ALL_TYPES, Endpoint, Event, EventDelivery
from .schemas import EVENT_TYPES, current_version

# PostgreSQL advisory lock class of a workspace's endpoint list (its count): "mbep".
_LOCK_ENDPOINTS = 0x6D62_6570

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


def event_id_time(event_id: str) -> datetime | None:
    """The millisecond an event id was made for (its event's `created`, to the millisecond), read
    from the ULID's first 10 characters; None for a string no event_id_new could have made. Lets
    the events log tell a cursor deleted by retention from one that never was, without a query."""
    if len(event_id) != 30 or not event_id.startswith("evt_"):
        return None
    ms = 0
    for char in event_id[4:14]:
        digit = _CROCKFORD.find(char)
        if digit < 0:
            return None
        ms = ms * 32 + digit
    try:
        return datetime.fromtimestamp(ms / 1000, tz=dt_timezone.utc)
    except (OverflowError, ValueError, OSError):  # past year 9999: no event of ours
        return None


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
    if new:  # counted once recorded for good: a rolled-back close published nothing
        types = Tally(event.type for event in new)
        transaction.on_commit(lambda: metrics.stream_events_count(types))
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


# --- Workspace webhook endpoints ---------------------------------------------------------------

MAX_ENDPOINTS = 20  # per workspace


class EndpointInvalid(ServiceError):
    """A field of an endpoint that cannot be saved: {field: [message]}, answered 400."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def endpoint_url_check(url: str) -> str:
    """The URL, stripped, when a webhook may POST to it (core.webhooks's egress rules, as for
    budget webhooks); checked again before every delivery."""
    try:
        webhooks.url_target(url, allow_private=getattr(settings, "WEBHOOK_ALLOW_PRIVATE", False),
                            timeout=webhooks.webhook_timeout())  # fmt: skip
    except webhooks.UrlRefused as exc:
        raise EndpointInvalid("url", str(exc)) from None
    except TimeoutError:
        raise EndpointInvalid("url", "The host name did not resolve in time; try again.") from None
    return url.strip()


def event_types_check(types: Sequence[str]) -> list[str]:
    """Known types (or "*" for all, alone), without repeats, in the registry's order."""
    if not types:
        raise EndpointInvalid("event_types", f'Subscribe to at least one type, or ["{ALL_TYPES}"] for all.')
    unknown = sorted(set(types) - set(EVENT_TYPES) - {ALL_TYPES})
    if unknown:
        raise EndpointInvalid("event_types", f"Unknown event type(s): {', '.join(unknown)}. Known: {', '.join(EVENT_TYPES)}.")
    if ALL_TYPES in types:
        return [ALL_TYPES]
    return [event_type for event_type in EVENT_TYPES if event_type in types]


@dataclass(frozen=True)
class IssuedEndpoint:
    endpoint: Endpoint
    secret: str  # shown once


def endpoint_create(*, workspace_id: int, url: str, event_types: Sequence[str] = (ALL_TYPES,),
                    description: str = "", active: bool = True) -> IssuedEndpoint:  # fmt: skip
    """A new endpoint with a fresh secret (returned once). It receives the events published from
    now on, never earlier ones (replay one from the events page to send it)."""
    types = event_types_check(event_types)
    url = endpoint_url_check(url)
    with transaction.atomic():
        workspace_lock(_LOCK_ENDPOINTS, workspace_id)
        if Endpoint.objects.filter(workspace_id=workspace_id).count() >= MAX_ENDPOINTS:
            raise EndpointInvalid("url", f"At most {MAX_ENDPOINTS} webhook endpoints per workspace.")
        secret = webhooks.secret_generate()
        endpoint = Endpoint.objects.create(workspace_id=workspace_id, url=url, secret=secret, event_types=types,
                                           description=description, active=active)  # fmt: skip
    return IssuedEndpoint(endpoint, secret)


def endpoint_update(endpoint: Endpoint, *, changes: dict) -> Endpoint:
    """Change url, event_types, description or active. Deliveries already scheduled stay (to
    the new URL); a type unsubscribed applies to events published from now on. Reactivating an
    endpoint resumes its queue where it stopped."""
    fields = []
    if "url" in changes:
        endpoint.url = endpoint_url_check(changes["url"])
        fields.append("url")
    if "event_types" in changes:
        endpoint.event_types = event_types_check(changes["event_types"])
        fields.append("event_types")
    for name in ("description", "active"):
        if name in changes:
            setattr(endpoint, name, changes[name])
            fields.append(name)
    if fields:
        endpoint.save(update_fields=fields)
        if endpoint.active:
            transaction.on_commit(lambda: endpoints_enqueue([endpoint.pk]))
    return endpoint


def endpoint_delete(endpoint: Endpoint) -> None:
    """Delete the endpoint with its deliveries and their attempts (the events stay)."""
    endpoint.delete()


class EventGone(ServiceError):
    """This event is no longer kept (past the retention); it cannot be sent again."""

    status = 404


def event_replay(event: Event, endpoint: Endpoint, *, now: datetime | None = None) -> EventDelivery:
    """Send one event again to one active endpoint of its workspace: a new delivery, signed like
    the others, placed after what the endpoint has queued (so out of `created` order: a manual
    replay). It is retried as any delivery. A paused endpoint is refused (the replay would wait
    unsent until it resumes), and so is an event deleted meanwhile by retention (EventGone): the
    event's row is locked until the delivery commits, so retention skips it and keeps it."""
    if endpoint.workspace_id != event.workspace_id:
        raise EndpointInvalid("endpoint", "This endpoint belongs to another workspace.")
    if not endpoint.active:
        raise EndpointInvalid("endpoint", "This endpoint is paused: resume it (active: true) to replay events to it.")
    now = now or timezone.now()
    with transaction.atomic():
        if Event.objects.select_for_update().filter(pk=event.pk).values_list("pk", flat=True).first() is None:
            raise EventGone()
        delivery = EventDelivery.objects.create(event=event, endpoint=endpoint, order_at=now, replay=True,
                                                next_attempt_at=now, created_at=now)  # fmt: skip
    transaction.on_commit(lambda: endpoints_enqueue([endpoint.pk]))
    return delivery

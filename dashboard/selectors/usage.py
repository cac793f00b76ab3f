"""The usage pages' reads: events by keyset pages, daily rollups, and the CSV exports, streamed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal

from django.db.models import Count, Q, QuerySet, Sum

from core.money import from_micros
from usage.models import DailyRollup, UsageEvent, received_since
from workspaces.models import ApiKey, Workspace

from ..csv_export import money
from ..forms import Cursor


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=dt_timezone.utc)


def _events(workspace: Workspace, filters: dict) -> QuerySet[UsageEvent]:
    events = UsageEvent.objects.filter(
        received_since(_day_start(filters["start"])),  # the partitions of earlier months are skipped
        workspace=workspace,
        occurred_at__gte=_day_start(filters["start"]),
        occurred_at__lt=_day_start(filters["end"] + timedelta(days=1)),
    )
    if filters.get("feature"):
        events = events.filter(feature=filters["feature"])
    if filters.get("model"):
        events = events.filter(model=filters["model"])
    if filters.get("api_key_id"):
        events = events.filter(api_key_id=filters["api_key_id"])
    return events


def _rollups(workspace: Workspace, filters: dict) -> QuerySet[DailyRollup]:
    rollups = DailyRollup.objects.filter(workspace=workspace, day__gte=filters["start"], day__lte=filters["end"])
    if filters.get("feature"):
        rollups = rollups.filter(feature=filters["feature"])
    if filters.get("model"):
        rollups = rollups.filter(model=filters["model"])
    if filters.get("api_key_id"):
        rollups = rollups.filter(api_key_id=filters["api_key_id"])
    return rollups


# --- The pages ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventsPage:
    events: list[UsageEvent]
    next_cursor: str | None  # "<occurred_at ISO>~<id>" of the last row, when there are more


def events_page(workspace: Workspace, filters: dict, *, before: Cursor | None = None, limit: int = 50) -> EventsPage:
    """Newest first, `limit` at a time, by keyset (occurred_at, id): page 1,000 costs what page 1
    costs (the (workspace, occurred_at) index), unlike OFFSET. `before` comes parsed and bounded
    (dashboard.forms.CursorField)."""
    events = _events(workspace, filters).select_related("api_key")
    if before is not None:
        moment, pk = before.occurred_at, before.pk
        events = events.filter(Q(occurred_at__lt=moment) | Q(occurred_at=moment, pk__lt=pk))
    rows = list(events.order_by("-occurred_at", "-pk")[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = f"{rows[-1].occurred_at.isoformat()}~{rows[-1].pk}" if more and rows else None
    return EventsPage(rows, next_cursor)


def rollups_queryset(workspace: Workspace, filters: dict) -> QuerySet[DailyRollup]:
    return _rollups(workspace, filters).select_related("api_key").order_by(
        "-day", "feature", "model", "steps", "width", "height", "api_key_id", "pk"
    )


# --- The exports --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportHint:
    events: int  # rows of the events CSV
    rollups: int  # rows of the rollups CSV
    amount: Decimal  # USD, list price, of the range

    @property
    def events_bytes(self) -> int:
        return self.events * EVENT_CSV_ROW_BYTES


# About what one event takes in the CSV (ids, two timestamps, dimensions, prices).
EVENT_CSV_ROW_BYTES = 170


def export_hint(workspace: Workspace, filters: dict) -> ExportHint:
    """How big an export will be, from the rollups (their `events` counts): no scan of events."""
    totals = _rollups(workspace, filters).aggregate(events=Sum("events"), rows=Count("pk"), micros=Sum("amount_micros"))
    return ExportHint(int(totals["events"] or 0), int(totals["rows"] or 0), from_micros(int(totals["micros"] or 0)))


EVENT_CSV_HEADER = (
    "event_id", "occurred_at_utc", "received_at_utc", "api_key", "feature", "model", "steps", "width", "height",
    "composition_control", "spot", "quantity", "unit_price_usd", "amount_usd",
)  # fmt: skip
ROLLUP_CSV_HEADER = (
    "day_utc", "api_key", "feature", "model", "steps", "width", "height", "composition_control", "spot",
    "unit_price_usd", "quantity", "amount_usd", "events",
)  # fmt: skip
CSV_CHUNK = 2000


def _key_prefixes(workspace: Workspace) -> dict[int, str]:
    return {key.pk: key.display_prefix for key in ApiKey.objects.filter(workspace=workspace).only("pk", "prefix")}


def _iso(moment: datetime) -> str:
    return moment.astimezone(dt_timezone.utc).isoformat().replace("+00:00", "Z")


def events_csv_rows(workspace: Workspace, filters: dict) -> Iterator[tuple]:
    """Every event of the range, oldest first, read through a server-side cursor (PostgreSQL) in
    chunks of CSV_CHUNK rows: memory stays flat however many millions there are. Text as `str`,
    amounts as `Decimal`, counts as `int`: dashboard.csv_export neutralises the text only."""
    keys = _key_prefixes(workspace)
    yield EVENT_CSV_HEADER
    rows = (
        _events(workspace, filters)
        .order_by("occurred_at", "pk")
        .values_list(
            "event_id", "occurred_at", "received_at", "api_key_id", "feature", "model", "steps", "width", "height",
            "composition_control", "spot", "quantity", "unit_price", "amount",
        )  # fmt: skip
        .iterator(chunk_size=CSV_CHUNK)
    )
    for (event_id, occurred, received, key_id, feature, model, steps, width, height, comp, spot, quantity,
         unit_price, amount) in rows:  # fmt: skip
        yield (
            event_id, _iso(occurred), _iso(received), keys.get(key_id, ""), feature, model, steps or "",
            width or "", height or "", bool(comp), bool(spot), quantity, money(unit_price), money(amount),
        )  # fmt: skip


def rollups_csv_rows(workspace: Workspace, filters: dict) -> Iterator[tuple]:
    """Every rollup of the range, by day, through a server-side cursor like events_csv_rows."""
    keys = _key_prefixes(workspace)
    yield ROLLUP_CSV_HEADER
    rows = (
        _rollups(workspace, filters)
        .order_by("day", "feature", "model", "steps", "width", "height", "api_key_id", "pk")
        .values_list(
            "day", "api_key_id", "feature", "model", "steps", "width", "height", "composition_control", "spot",
            "unit_price_micros", "quantity", "amount_micros", "events",
        )  # fmt: skip
        .iterator(chunk_size=CSV_CHUNK)
    )
    for day, key_id, feature, model, steps, width, height, comp, spot, unit, quantity, amount, events in rows:
        yield (
            day.isoformat(), keys.get(key_id, ""), feature, model, steps or "", width or "", height or "",
            bool(comp), bool(spot), from_micros(unit), quantity, from_micros(amount), events,
        )  # fmt: skip

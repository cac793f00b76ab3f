"""Reads of usage and spend. They read the daily rollups, never a scan of raw events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from django.db.models import Sum
from django.db.models.functions import TruncMonth

from core.money import from_micros
from workspaces.models import ApiKey, Workspace

from .models import DailyRollup

# The UTC days anyone may ask about (the usage API, the dashboard's pages and exports): far from
# the ends of Python's calendar, where the day after or an offset of +14:00 no longer exists.
EARLIEST_DAY = date(2000, 1, 1)
LATEST_DAY = date(2099, 12, 31)
DAYS_BOUNDS_MESSAGE = f"Days are between {EARLIEST_DAY.isoformat()} and {LATEST_DAY.isoformat()} (UTC)."

GROUP_BY_CHOICES: tuple[str, ...] = ("day", "month", "feature", "model", "resolution", "steps", "api_key")
_GROUP_COLUMNS: dict[str, tuple[str, ...]] = {
    "day": ("day",),
    "month": ("month",),
    "feature": ("feature",),
    "model": ("model",),
    "resolution": ("width", "height"),
    "steps": ("steps",),
    "api_key": ("api_key_id",),
}


@dataclass(frozen=True)
class UsageSummary:
    rows: list[dict[str, Any]]
    total: Decimal  # USD, 6 dp
    quantity: int


def usage_summary(
    *, workspace: Workspace, start: date, end: date, group_by: tuple[str, ...]
) -> UsageSummary:
    """Quantity and amount for `workspace` over UTC days [start, end] (end inclusive), one row
    per combination of the `group_by` dimensions, ordered by them."""
    rollups = DailyRollup.objects.filter(workspace=workspace, day__gte=start, day__lte=end)
    columns = [column for dimension in group_by for column in _GROUP_COLUMNS[dimension]]
    if not columns:
        totals = rollups.aggregate(quantity=Sum("quantity"), amount=Sum("amount_micros"))
        quantity, micros = int(totals["quantity"] or 0), int(totals["amount"] or 0)
        rows = [{"quantity": quantity, "amount": from_micros(micros)}] if quantity else []
        return UsageSummary(rows=rows, total=from_micros(micros), quantity=quantity)
    if "month" in group_by:
        rollups = rollups.annotate(month=TruncMonth("day"))
    aggregated = (
        rollups.values(*columns)
        .annotate(quantity_sum=Sum("quantity"), amount_sum=Sum("amount_micros"))
        .order_by(*columns)
    )
    keys = _api_key_labels(workspace) if "api_key" in group_by else {}
    rows: list[dict[str, Any]] = []
    total_micros = 0
    total_quantity = 0
    for record in aggregated:
        row: dict[str, Any] = {}
        for dimension in group_by:
            row.update(_dimension_value(dimension, record, keys))
        row["quantity"] = int(record["quantity_sum"])
        row["amount"] = from_micros(int(record["amount_sum"]))
        total_micros += int(record["amount_sum"])
        total_quantity += row["quantity"]
        rows.append(row)
    return UsageSummary(rows=rows, total=from_micros(total_micros), quantity=total_quantity)


def _api_key_labels(workspace: Workspace) -> dict[int, tuple[str, str]]:
    return {
        key.pk: (key.display_prefix, key.name)
        for key in ApiKey.objects.filter(workspace=workspace).only("pk", "prefix", "name")
    }


def _dimension_value(
    dimension: str, record: dict[str, Any], keys: dict[int, tuple[str, str]]
) -> dict[str, Any]:
    if dimension == "day":
        return {"day": record["day"].isoformat()}
    if dimension == "month":
        month = record["month"]
        return {"month": f"{month.year:04d}-{month.month:02d}"}
    if dimension == "resolution":
        width, height = record["width"], record["height"]
        return {"resolution": f"{width}x{height}" if width else None}
    if dimension == "steps":
        return {"steps": record["steps"] or None}
    if dimension == "model":
        return {"model": record["model"] or None}
    if dimension == "api_key":
        prefix, name = keys.get(record["api_key_id"], ("", ""))
        return {"api_key": prefix, "api_key_name": name}
    return {dimension: record[dimension]}


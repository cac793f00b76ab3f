"""Archiving a closed month of events (manage.py archive_usage): billing says when a month may go.

A month's events (by arrival, usage.partitions) may leave the database once every one of them is
billed: then its statements, rollups and receipts carry the history, and nothing will read the
events again, but a reissue, which is refused for them (billing.reissue)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from django.db import transaction
from django.db.models import Count, Max

from core.periods import month_start, period_bounds
from usage.models import ArchivedMonth, UsageEvent
from usage.partitions import ArchiveRefused, export_and_remove

from .close import _lock
from .selectors import last_live


@dataclass(frozen=True)
class Unbilled:
    workspace_id: int
    events: int


def arrivals_in(month: date) -> dict[int, dict]:
    """Per workspace with events that arrived in `month`: the latest arrival and occurrence, and
    how many. One read of the month: nothing arrives in a past month any more."""
    start, end = period_bounds(month)
    return {
        row["workspace_id"]: row
        for row in UsageEvent.objects.filter(received_at__gte=start, received_at__lt=end)
        .values("workspace_id")
        .annotate(received=Max("received_at"), occurred=Max("occurred_at"), events=Count("pk"))
        .order_by()
    }


def unbilled_in(latest: dict[int, dict]) -> list[Unbilled]:
    """Of `arrivals_in(month)`, the workspaces with events that no live statement bills yet: what a
    workspace's live statements bill together is every event that occurred before the last one's
    end and arrived by its cutoff (selectors.unbilled_q)."""
    priors = last_live(list(latest))
    unbilled = []
    for workspace_id, row in sorted(latest.items()):
        prior = priors.get(workspace_id)
        if prior is None or row["received"] > prior.cutoff or row["occurred"] >= prior.end:
            unbilled.append(Unbilled(workspace_id, row["events"]))
    return unbilled


@transaction.atomic
def month_archive(
    month: date,
    *,
    directory: Path | None = None,
    now: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ArchivedMonth:
    """Export `month`'s events and remove them (usage.partitions.export_and_remove), once every one
    is billed. The workspaces are locked as a close or a reissue locks them, until the archive
    commits: a reissue running meanwhile either finishes first (and its replacement is what is
    checked) or waits and then sees the month archived."""
    month = month_start(month)
    latest = arrivals_in(month)
    _lock(sorted(latest))  # then the statements are read: a reissue or close may have just changed them
    unbilled = unbilled_in(latest)
    if unbilled:
        listed = ", ".join(f"workspace {u.workspace_id} ({u.events} events)" for u in unbilled[:10])
        raise ArchiveRefused(
            f"{month:%Y-%m} has events no statement bills yet: {listed}{' …' if len(unbilled) > 10 else ''}. "
            f"Run `manage.py close_period` for {month:%Y-%m} (and any later month those workspaces have "
            "open), then archive."
        )
    return export_and_remove(month, directory=directory, now=now, progress=progress)

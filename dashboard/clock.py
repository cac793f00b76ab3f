"""The dashboard's "now": every page and read takes the time from `now()` here (tests replace it:
monkeypatch `dashboard.clock.now`, and call it as `clock.now()`, never imported by name)."""

from __future__ import annotations

from datetime import date, datetime
from datetime import timezone as dt_timezone

from django.utils import timezone


def now() -> datetime:
    return timezone.now()


def utc_today(moment: datetime | None = None) -> date:
    """The UTC day of `moment`, by default of now()."""
    return (moment or now()).astimezone(dt_timezone.utc).date()

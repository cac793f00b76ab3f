"""Billing periods: calendar months in UTC, each named by its 1st day (a `date`).

A period covers [1st 00:00 UTC, next 1st 00:00 UTC). Pure: no ORM, no settings.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone


def month_start(day: date) -> date:
    """The 1st of `day`'s month."""
    return day.replace(day=1)


def next_month(period: date) -> date:
    """The 1st of the month after `period`'s."""
    return date(period.year + period.month // 12, period.month % 12 + 1, 1)


def previous_month(period: date) -> date:
    """The 1st of the month before `period`'s."""
    return date(period.year - (period.month == 1), (period.month - 2) % 12 + 1, 1)


def add_months(day: date, months: int) -> date:
    """The same day `months` later (or earlier), clamped to the end of a shorter month."""
    year, month = divmod(day.year * 12 + day.month - 1 + months, 12)
    month += 1
    following = date(year + (month == 12), month % 12 + 1, 1)
    return date(year, month, min(day.day, (following - timedelta(days=1)).day))


def current_period(now: datetime) -> date:
    """The period (the 1st of the UTC month) that `now` falls in."""
    return now.astimezone(timezone.utc).date().replace(day=1)


def period_bounds(period: date) -> tuple[datetime, datetime]:
    """The period as UTC instants: [its 1st 00:00, the next 1st 00:00)."""
    start = datetime.combine(month_start(period), time.min, tzinfo=timezone.utc)
    return start, datetime.combine(next_month(period), time.min, tzinfo=timezone.utc)


def months_between(first: date, last: date) -> list[date]:
    """Every period from `first`'s to `last`'s, both included, oldest first."""
    months, month = [], month_start(first)
    while month <= last:
        months.append(month)
        month = next_month(month)
    return months


def parse_period(text: str) -> date:
    """'YYYY-MM' as a period; ValueError with a message for a person otherwise."""
    try:
        year, month = (int(part) for part in text.split("-"))
        return date(year, month, 1)
    except (ValueError, TypeError):
        raise ValueError(f"Not a month: {text!r}; write YYYY-MM, e.g. 2026-10.") from None

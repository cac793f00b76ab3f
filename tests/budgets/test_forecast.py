"""The forecast: month-to-date plus the recent daily run rate for the days left, never below actual."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from budgets.selectors import forecast_month

M = 1_000_000  # micro-dollars per dollar


def at(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=timezone.utc)  # November: 30 days


def days(*values: float, first: int = 1) -> dict[date, int]:
    return {date(2026, 11, first + n): int(round(v * M)) for n, v in enumerate(values)}


@pytest.mark.parametrize(
    "daily, now, spend, forecast, basis_days",
    [
        # Mid-month: the last 7 full days (Nov 14-20) average $2/day; 9.5 days left after Nov 21 12:00.
        (days(*([10] * 13), *([2] * 7), 1), at(21, 12), 145, 145 + 2 * Decimal("9.5"), Decimal(7)),
        # A quiet last week: the run rate is 0, the forecast is the spend so far.
        (days(50, *([0] * 10)), at(12), 50, 50, Decimal(7)),
        # Nov 4 00:00: 3 full days; the month so far averages $1/day; 27 days left.
        (days(1, 1, 1), at(4), 3, 3 + 27, Decimal(3)),
        # Nov 3 12:00: 2.5 days so far (today's spend counts), $5 → $2/day; 27.5 days left.
        (days(2, 2, 1), at(3, 12), 5, 5 + 2 * Decimal("27.5"), Decimal("2.5")),
        # The first hours of the month count as one day, not as a tiny basis to extrapolate wildly.
        (days(1), at(1, 6), 1, 1 + Decimal("29.75"), Decimal(1)),
        # Nothing spent.
        ({}, at(15), 0, 0, Decimal(7)),
    ],
)
def test_the_forecast_method(daily, now, spend, forecast, basis_days):
    result = forecast_month(daily, now=now)
    assert result.period == date(2026, 11, 1)
    assert result.spend == Decimal(spend)
    assert result.forecast == Decimal(forecast).quantize(Decimal("0.000001"))
    assert result.basis_days == basis_days
    assert result.forecast >= result.spend


def test_days_outside_the_month_are_not_spend_and_the_week_before_is_ignored():
    daily = {date(2026, 10, 31): 99 * M, date(2026, 12, 1): 99 * M, **days(1, 1)}
    assert forecast_month(daily, now=at(2, 12)).spend == Decimal(2)


def test_the_last_instant_of_the_month_forecasts_the_spend():
    last = datetime(2026, 11, 30, 23, 59, 59, 999999, tzinfo=timezone.utc)
    result = forecast_month(days(*([3] * 30)), now=last)
    assert result.spend == 90
    assert result.forecast - result.spend < Decimal("0.0001")


def test_money_is_exact_and_rounded_half_up_once():
    # $1/3 a day over 3 full days, 27 days left: 1 + 27 × (1/3) = 10 exactly, not 9.999999.
    one_third = {date(2026, 11, 1): 333_333, date(2026, 11, 2): 333_333, date(2026, 11, 3): 333_334}
    assert forecast_month(one_third, now=at(4)).forecast == Decimal("10.000000")
    # 7 micro-dollars over the last 7 days, half a day left: 7 + 0.5 rounds half-up to 8.
    week = {date(2026, 11, 23 + n): 1 for n in range(7)}
    assert forecast_month(week, now=at(30, 12)).forecast == Decimal("0.000008")


def test_a_leap_february_has_29_days():
    now = datetime(2028, 2, 10, tzinfo=timezone.utc)
    daily = {date(2028, 2, 1) + timedelta(days=n): M for n in range(9)}
    assert forecast_month(daily, now=now).forecast == Decimal(9 + 20)

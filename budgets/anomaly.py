"""Spend anomaly detection: is one day's spend far above the series' own recent history? Pure: no
ORM, plain values in (amounts in any one unit: integer micro-dollars or Decimal USD), a Verdict out.

The baseline is robust, so that one earlier spike does not hide the next one nor mark itself as
normal: the median of the history, and its spread the MAD (median absolute deviation), scaled by
1.4826 so that it estimates a standard deviation for normal noise. The score is

    score = (amount - baseline) / (1.4826 × MAD)

and the day is anomalous when score >= threshold (a budget's `anomaly_threshold`, 4 by default)
and the increase over the baseline is at least MIN_INCREASE (1 USD) and MIN_INCREASE_RATIO (50 %)
of the baseline, so that tiny workspaces are not told about a few cents.

History: the last HISTORY_DAYS (14) days before the day judged. With at least SEASONAL_DAYS (28,
four weeks), weekdays count: the baseline is the median of the same weekday's values (up to five
Mondays for a Monday), and the spread is the MAD of every day's residual against its own
weekday's median over the whole history, so a weekend dip or a busy Monday is normal, while a 5×
Tuesday is not. With fewer than MIN_HISTORY_DAYS (7) days nothing is judged.

The MAD has a floor, MAD_FLOOR_RATIO (5 %) of the baseline and at least MAD_FLOOR (1 cent): a
perfectly flat history would otherwise make a one-cent rise infinitely anomalous.

Today so far (the hourly check) is judged against the baseline pro-rated by the fraction of the
UTC day elapsed (baseline and MAD × fraction; the 1 USD minimum increase stays whole): the rollups hold whole
days only, so "the same hours of past days" would need a scan of raw events for every series,
which the hourly job over every workspace cannot afford. Pro-rating assumes spend spread evenly
over the day; a workspace that spends in the morning looks busy early on, which the fraction's
floor MIN_FRACTION (a quarter of a day) tempers: before 06:00 UTC today is compared with a
quarter of a normal day, so a one-hour burst must be large to alert. The full-day check at 00:30
judges the whole day exactly, and each series is alerted at most once a day either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from statistics import median

HISTORY_DAYS = 14
SEASONAL_DAYS = 28
MAX_HISTORY_DAYS = 35  # five of each weekday: what the seasonal baseline reads at most
MIN_HISTORY_DAYS = 7
MAD_SCALE = Decimal("1.4826")  # MAD × this estimates the standard deviation of normal noise
MIN_FRACTION = Decimal("0.25")
DEFAULT_THRESHOLD = Decimal("4.0")
SCORE_PLACES = Decimal("0.01")


@dataclass(frozen=True)
class Policy:
    """The knobs besides the threshold, in the unit of the amounts (defaults: micro-dollars)."""

    min_increase: Decimal = Decimal(1_000_000)  # 1 USD
    min_increase_ratio: Decimal = Decimal("0.5")  # of the baseline
    mad_floor: Decimal = Decimal(10_000)  # 1 cent; > 0, or a history of zeros has no spread
    mad_floor_ratio: Decimal = Decimal("0.05")  # of the baseline


MICROS_POLICY = Policy()


@dataclass(frozen=True)
class Verdict:
    anomalous: bool
    amount: Decimal  # the day's spend (so far), in the unit given
    baseline: Decimal  # the (weekday) median, pro-rated to the fraction of the day judged
    mad: Decimal  # the spread used (after its floor), pro-rated likewise
    score: Decimal  # (amount - baseline) / (1.4826 × mad), 2 dp
    threshold: Decimal
    seasonal: bool  # weekday baseline (>= 4 weeks of history)
    history_days: int


def _decimal(value: int | Decimal) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(value)


def _median(values: Sequence[Decimal]) -> Decimal:
    return Decimal(median(values))


def _baseline(history: Sequence[Decimal], day: date) -> tuple[Decimal, Decimal, bool]:
    """(median, raw MAD, seasonal) of the history, whose last value is the day before `day`."""
    if len(history) >= SEASONAL_DAYS:
        window = history[-MAX_HISTORY_DAYS:]
        first = day - timedelta(days=len(window))
        by_weekday: dict[int, list[Decimal]] = {}
        for offset, value in enumerate(window):
            by_weekday.setdefault((first + timedelta(days=offset)).weekday(), []).append(value)
        medians = {weekday: _median(values) for weekday, values in by_weekday.items()}
        residuals = [
            abs(value - medians[(first + timedelta(days=offset)).weekday()]) for offset, value in enumerate(window)
        ]
        return medians[day.weekday()], _median(residuals), True
    window = history[-HISTORY_DAYS:]
    centre = _median(window)
    return centre, _median([abs(value - centre) for value in window]), False


def judge(
    history: Sequence[int | Decimal],
    amount: int | Decimal,
    *,
    day: date,
    threshold: Decimal = DEFAULT_THRESHOLD,
    fraction: Decimal = Decimal(1),
    policy: Policy = MICROS_POLICY,
) -> Verdict | None:
    """Judge `amount`, spent on `day` (all of it, or the `fraction` of it elapsed so far), against
    `history`: the daily amounts of the days just before `day`, oldest first, ending the day
    before (days without spend are 0). None when the history is shorter than MIN_HISTORY_DAYS."""
    if len(history) < MIN_HISTORY_DAYS:
        return None
    values = [_decimal(value) for value in history]
    spent = _decimal(amount)
    scale = min(max(_decimal(fraction), MIN_FRACTION), Decimal(1))
    centre, mad, seasonal = _baseline(values, day)
    mad = max(mad, centre * policy.mad_floor_ratio, policy.mad_floor) * scale
    baseline = centre * scale
    score = ((spent - baseline) / (MAD_SCALE * mad)).quantize(SCORE_PLACES, ROUND_HALF_UP)
    increase_needed = max(policy.min_increase, baseline * policy.min_increase_ratio)
    anomalous = score >= threshold and spent - baseline >= increase_needed
    return Verdict(anomalous, spent, baseline, mad, score, threshold, seasonal, len(values))

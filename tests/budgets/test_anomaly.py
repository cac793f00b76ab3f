"""The pure detection (budgets.anomaly): the issue's synthetic history, and invariants as
property tests."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from budgets.anomaly import Policy, judge

USD = 1_000_000  # micro-dollars
MONDAY = date(2026, 11, 2)
NO_FLOORS = Policy(min_increase=Decimal(0), min_increase_ratio=Decimal(0), mad_floor=Decimal(0), mad_floor_ratio=Decimal("0.05"))


def weekly(days: int, *, end: date, weekday_usd=(100, 110, 95, 105, 120, 20, 15)) -> list[int]:
    """A synthetic history ending the day before `end`: busy weekdays, weekend dips, some wobble."""
    wobble = (0, 3, -2, 4, -3, 1, -1, 2, -4, 3, 0, -2)
    first = end - timedelta(days=days)
    return [
        (weekday_usd[(first + timedelta(days=n)).weekday()] + wobble[n % len(wobble)]) * USD for n in range(days)
    ]


def test_normal_weekly_variation_stays_quiet_and_a_5x_spike_fires():
    history = weekly(35, end=MONDAY + timedelta(days=35))
    verdicts = []
    # Twelve normal days, weekends included, each judged against what came before it.
    for n in range(12):
        day = MONDAY + timedelta(days=35 + n)
        usual = weekly(1, end=day + timedelta(days=1))[0]
        verdicts.append(judge(history, usual, day=day))
        history = history + [usual]
    assert [v.anomalous for v in verdicts] == [False] * 12, verdicts
    assert all(v.seasonal for v in verdicts)
    saturday = MONDAY + timedelta(days=47)  # the day after the history: 5 × a weekday's spend
    assert saturday.weekday() == 5
    spike = judge(history, 5 * 100 * USD, day=saturday)
    assert spike.anomalous and spike.score > 20
    assert spike.baseline < 25 * USD  # the weekend's usual, not the week's
    assert judge(history, 5 * 20 * USD, day=saturday).anomalous  # 5 × a normal Saturday
    assert not judge(history, 24 * USD, day=saturday).anomalous


def test_the_weekend_dip_would_look_like_a_spike_on_monday_without_seasonality():
    """With two weeks only (no weekday baseline), Monday after a weekend is compared with the
    plain median and is normal; a weekday baseline knows that Saturday is quiet."""
    history = weekly(14, end=MONDAY + timedelta(days=14))
    verdict = judge(history, 100 * USD, day=MONDAY + timedelta(days=14))
    assert not verdict.seasonal and not verdict.anomalous


def test_too_little_history_is_not_judged():
    assert judge([10 * USD] * 6, 1000 * USD, day=MONDAY) is None
    assert judge([10 * USD] * 7, 1000 * USD, day=MONDAY).anomalous


def test_a_flat_history_does_not_alert_on_a_cent_nor_a_tiny_workspace_on_a_dollar():
    assert not judge([10 * USD] * 14, 10 * USD + 10_000, day=MONDAY).anomalous  # the MAD's floor
    tiny = judge([20_000] * 14, 900_000, day=MONDAY)  # 2 cents a day, then 90 cents: 45×, but < $1
    assert tiny.score > 50 and not tiny.anomalous
    assert judge([20_000] * 14, 1_100_000, day=MONDAY).anomalous


def test_the_increase_must_be_half_the_baseline_too():
    steady = [1000 * USD + (n % 3) * USD for n in range(14)]  # MAD ~ $1: a tight series
    assert not judge(steady, 1400 * USD, day=MONDAY).anomalous  # score huge, +40 % only
    assert judge(steady, 1600 * USD, day=MONDAY).anomalous


def test_today_so_far_is_compared_with_the_baseline_pro_rated_to_the_hour():
    history = [100 * USD + (n % 4) * 5 * USD for n in range(14)]
    noon = Decimal("0.5")
    assert not judge(history, 60 * USD, day=MONDAY, fraction=noon).anomalous  # on pace
    at_noon = judge(history, 200 * USD, day=MONDAY, fraction=noon)  # two days' worth by noon: 4× the pace
    assert at_noon.anomalous and at_noon.baseline == 105 * USD * noon
    # Before 06:00 the fraction counts as a quarter: an early burst is not extrapolated 24-fold.
    early = judge(history, 30 * USD, day=MONDAY, fraction=Decimal("0.04"))  # 7× the pace of one hour
    assert early.baseline == judge(history, 30 * USD, day=MONDAY, fraction=Decimal("0.25")).baseline
    assert not early.anomalous


def test_the_threshold_decides():
    history = [100 * USD + (n % 5) * 4 * USD for n in range(14)]
    verdict = judge(history, 180 * USD, day=MONDAY, threshold=Decimal("20"))
    assert not verdict.anomalous and verdict.score >= 4
    assert judge(history, 180 * USD, day=MONDAY, threshold=Decimal("4")).anomalous


# Every day at least a dollar, so that the relative floor of the MAD (5 % of the median) is never
# zero without the absolute one.
amounts = st.lists(st.integers(min_value=USD, max_value=10_000 * USD), min_size=7, max_size=35)


@settings(max_examples=200, deadline=None)
@given(history=amounts, amount=st.integers(min_value=0, max_value=100_000 * USD), factor=st.integers(1, 1000),
       day=st.dates(date(2020, 1, 1), date(2030, 1, 1)))  # fmt: skip
def test_scaling_every_amount_keeps_the_verdict_and_scales_the_numbers(history, amount, factor, day):
    """Without the absolute floors (a dollar, a cent), the verdict is unit-free: the same in cents
    or in micro-dollars, for a workspace a thousand times larger."""
    one = judge(history, amount, day=day, policy=NO_FLOORS)
    many = judge([value * factor for value in history], amount * factor, day=day, policy=NO_FLOORS)
    assert (one.anomalous, one.score, one.seasonal) == (many.anomalous, many.score, many.seasonal)
    assert many.baseline == one.baseline * factor and many.mad == one.mad * factor


@settings(max_examples=200, deadline=None)
@given(history=amounts, day=st.dates(date(2020, 1, 1), date(2030, 1, 1)), pick=st.integers(0, 34))
def test_a_day_like_the_history_never_alerts(history, day, pick):
    """A day whose spend is one the history already had (no spike) and not above its median never
    alerts; nor does a day at or below the baseline, whatever the threshold."""
    verdict = judge(history, history[pick % len(history)], day=day, threshold=Decimal(2))
    if verdict.amount <= verdict.baseline:
        assert not verdict.anomalous and verdict.score <= 0
    below = judge(history, 0, day=day, threshold=Decimal(2))
    assert not below.anomalous


@settings(max_examples=200, deadline=None)
@given(history=amounts, amount=st.integers(0, 100_000 * USD), day=st.dates(date(2020, 1, 1), date(2030, 1, 1)),
       more=st.integers(0, 10_000 * USD))  # fmt: skip
def test_spending_more_never_turns_an_alert_off_and_a_higher_threshold_never_turns_one_on(history, amount, day, more):
    verdict = judge(history, amount, day=day)
    assert judge(history, amount + more, day=day).score >= verdict.score
    if verdict.anomalous:
        assert judge(history, amount + more, day=day).anomalous
    if not verdict.anomalous:
        assert not judge(history, amount, day=day, threshold=verdict.threshold + 1).anomalous

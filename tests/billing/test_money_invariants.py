"""Money invariants of a month's statement (docs/money-flow.md).

Two halves:

- the pure engine (billing.statement.build), no database: for arbitrary usage, plans, coupons and
  carried balances, the statement adds up, no discount ever takes the running total below zero,
  usage lines are exactly quantity × unit price, every amount has 6 decimal places, the free tier
  takes what is left and no more, and the amount due is the total rounded to cents once (or 0 and
  carried when under the 0.50 minimum); plus volume tiers with hand-computed figures;
- the database: random events ingested with `usage.services.events_ingest`, then the preview
  (`statement_draft`) and the closed statement (`statement_close`) must agree line for line, and
  equal a recomputation written here from the raw UsageEvent rows, independently of
  billing/statement.py (late usage and a carried balance included).
"""

from __future__ import annotations

import itertools
import uuid
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.db import transaction
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from billing.statement import (
    Built,
    Coupon,
    CustomRate,
    PlanTerms,
    Tier,
    UsageGroup,
    build,
    volume_discount,
)
from pricing.rules import FEATURES

D = Decimal
SIX = D("0.000001")
MINIMUM = D("0.50")
# The steps of the money flow, in the order their lines must appear.
KIND_ORDER = (
    "usage",
    "late_usage",
    "volume_discount",
    "savings_discount",
    "coupon",
    "free_tier",
    "commitment_shortfall",
    "fixed_fee",
    "carried_balance",
)
DISCOUNT_KINDS = {"volume_discount", "savings_discount", "coupon", "free_tier"}
ADD_ONS = tuple(f for f in FEATURES if f != "generation")


def q6(value: Decimal) -> Decimal:
    """Half-up to 6 decimal places: the only rounding the product allows below cents."""
    return value.quantize(SIX, rounding=ROUND_HALF_UP)


def cents(total: Decimal) -> int:
    return int((total * 100).quantize(D(1), rounding=ROUND_HALF_UP))


def has_six_places(value: Decimal) -> bool:
    return isinstance(value, Decimal) and value.as_tuple().exponent == -6


# --- Strategies ---------------------------------------------------------------------------------


def decimals(low: str, high: str, places: int = 6) -> st.SearchStrategy[Decimal]:
    """Exact decimals in [low, high] with `places` decimal places (as a DecimalField stores them)."""
    scale = 10**places
    return st.integers(int(D(low) * scale), int(D(high) * scale)).map(lambda n: D(n).scaleb(-places))


# Real list prices (the pricing page's) and arbitrary ones, 6 dp.
LIST_PRICES = st.one_of(
    st.sampled_from([D(p).quantize(SIX) for p in ("0.004", "0.0048", "0.032", "0.169", "0.2028", "0.015",
                                                   "0.030", "0.100", "5.00", "0.640", "4369.067")]),
    decimals("0", "10"),
    decimals("0", "0.01"),
)
QUANTITIES = st.one_of(st.integers(1, 10), st.integers(0, 100_000))
MONTHS = st.sampled_from([date(2025, m, 1) for m in range(1, 13)] + [date(2026, m, 1) for m in range(1, 10)])


@st.composite
def usage_group(draw) -> UsageGroup:
    feature = draw(st.sampled_from(FEATURES))
    if feature == "generation":
        model = draw(st.sampled_from(["sd15", "sdxl"]))
        steps = draw(st.sampled_from([20, 30, 50, 100, 150, 1000]))
        width, height = draw(st.sampled_from([(512, 512), (512, 768), (1024, 1024), (1024, 1824), (2048, 2048)]))
        composition = draw(st.booleans())
    else:
        model, steps, width, height, composition = "", 0, 0, 0, False
    return UsageGroup(
        feature=feature,
        model=model,
        steps=steps,
        width=width,
        height=height,
        composition_control=composition,
        spot=draw(st.booleans()),
        list_unit_price=draw(LIST_PRICES),
        quantity=draw(QUANTITIES),
        late_for=draw(st.none() | MONTHS),
    )


PERCENTS = st.one_of(st.sampled_from([D(0), D(100), D("12.5"), D("33.33")]), decimals("0", "100", 2))


@st.composite
def custom_rate(draw) -> CustomRate:
    if draw(st.booleans()):
        return CustomRate(percent_of_list=draw(decimals("0", "200", 3)))
    return CustomRate(unit_price=draw(decimals("0", "1")))


@st.composite
def volume_tiers(draw) -> tuple[Tier, ...]:
    bounds = sorted(set(draw(st.lists(decimals("0.01", "500"), max_size=4))))
    tiers = [Tier(up_to, draw(PERCENTS)) for up_to in bounds]
    if draw(st.booleans()):
        tiers.append(Tier(None, draw(PERCENTS)))
    return tuple(draw(st.permutations(tiers)))  # the engine must not rely on the given order


@st.composite
def plan_terms(draw) -> PlanTerms:
    rate_keys = st.sampled_from([("generation", "sd15"), ("generation", "sdxl"), ("generation", "")]
                                + [(f, "") for f in ADD_ONS])
    money_or_none = st.none() | decimals("0", "500")
    return PlanTerms(
        name="property plan",
        free_tier_credit=draw(st.sampled_from([D("0.50"), D(0)]) | decimals("0", "5")),
        custom_rates=draw(st.dictionaries(rate_keys, custom_rate(), max_size=4)),
        spot_discount_percent=draw(PERCENTS),
        volume_mode=draw(st.sampled_from(["graduated", "all_units"])),
        volume_tiers=draw(volume_tiers()),
        savings_commitment=draw(money_or_none),
        savings_discount_percent=draw(PERCENTS),
        reserved_fee=draw(money_or_none),
        reserved_included_usage=draw(money_or_none),
    )


@st.composite
def coupon(draw) -> Coupon:
    kind = draw(st.sampled_from(["percent", "fixed"]))
    value = draw(PERCENTS if kind == "percent" else decimals("0", "100"))
    features = draw(st.frozensets(st.sampled_from(FEATURES), max_size=3))
    return Coupon(name=f"C{draw(st.integers(1, 99))}", kind=kind, value=value, features=features)


CARRIED = st.one_of(st.just(D("0.000000")), decimals("0", "0.499999"), decimals("0", "100"))


# --- An independent reading of the rules, for the per-line checks -------------------------------


def expected_unit(group: UsageGroup, plan: PlanTerms) -> Decimal:
    """Custom rate (model-specific before any-model), then the spot discount; never below 0."""
    unit = group.list_unit_price
    for key in ((group.feature, group.model), (group.feature, "")):
        if key in plan.custom_rates:
            rate = plan.custom_rates[key]
            unit = rate.unit_price if rate.unit_price is not None else q6(unit * rate.percent_of_list / 100)
            break
    if group.spot:
        unit = unit - q6(unit * plan.spot_discount_percent / 100)
    return max(q6(unit), D(0))


def check_invariants(built: Built, *, usage: list[UsageGroup], plan: PlanTerms, carried: Decimal) -> None:
    lines = built.lines
    amounts = [line.amount for line in lines]

    # The total is the sum of the lines, to the micro-dollar, and never negative.
    assert built.total == sum(amounts, D(0))
    assert built.total >= 0

    # Every amount and unit price has exactly 6 decimal places.
    for line in lines:
        assert has_six_places(line.amount), line
        assert has_six_places(line.unit_price), line
    assert has_six_places(built.total) and has_six_places(built.carried_forward)

    # The lines follow the money flow's order; one line per step except usage and coupons.
    ranks = [KIND_ORDER.index(line.kind) for line in lines]
    assert ranks == sorted(ranks), [line.kind for line in lines]
    kinds = Counter(line.kind for line in lines)
    for kind in ("volume_discount", "savings_discount", "free_tier", "commitment_shortfall", "carried_balance"):
        assert kinds[kind] <= 1
    assert kinds["fixed_fee"] <= 2

    # No line takes the running total below zero; discounts are credits, never charges.
    running = D(0)
    for line in lines:
        running += line.amount
        assert running >= 0, f"running total {running} after {line}"
        if line.kind in DISCOUNT_KINDS:
            assert line.amount < 0 and line.quantity == 1 and line.unit_price == line.amount, line

    # Usage lines: exactly quantity × unit price, at the plan's rate; one per group with usage.
    usage_lines = [line for line in lines if line.kind in ("usage", "late_usage")]
    for line in usage_lines:
        assert line.amount == line.quantity * line.unit_price, line
        assert line.quantity > 0
    assert Counter((line.kind, line.quantity, line.unit_price) for line in usage_lines) == Counter(
        ("late_usage" if g.late_for else "usage", g.quantity, expected_unit(g, plan)) for g in usage if g.quantity > 0
    )
    for line, group in zip(
        (line for line in usage_lines if line.kind == "late_usage"),
        sorted((g for g in usage if g.late_for and g.quantity > 0), key=lambda g: g.late_for),
        strict=True,
    ):
        assert line.description.startswith(f"Late usage for {group.late_for:%B %Y}: ")

    # The free tier takes what is left of the usage after discounts, never more, never more
    # than the credit; and it is there whenever both are positive.
    before_free_tier = sum((line.amount for line in lines if KIND_ORDER.index(line.kind) < 5), D(0))
    free = [line for line in lines if line.kind == "free_tier"]
    wanted = min(q6(plan.free_tier_credit), before_free_tier)
    if free:
        assert -free[0].amount <= before_free_tier
        assert -free[0].amount <= plan.free_tier_credit
        assert -free[0].amount == wanted
    else:
        assert wanted <= 0

    # The carried balance is billed as given.
    carried_lines = [line.amount for line in lines if line.kind == "carried_balance"]
    assert carried_lines == ([q6(carried)] if carried else [])

    # Cents are rounded once, on the total; under the minimum it is all carried forward.
    if built.total >= MINIMUM:
        assert built.amount_due_cents == cents(built.total)
        assert built.carried_forward == 0
    else:
        assert built.amount_due_cents == 0
        assert built.carried_forward == built.total


@settings(max_examples=400, deadline=None)
@given(
    usage=st.lists(usage_group(), max_size=12),
    plan=plan_terms(),
    coupons=st.lists(coupon(), max_size=4),
    carried=CARRIED,
)
@example(usage=[], plan=PlanTerms(), coupons=[], carried=D("0.000000"))
@example(  # the minimum exactly: charged, not carried
    usage=[UsageGroup("generation", "sd15", 30, 512, 512, False, False, D("0.004000"), 250)],
    plan=PlanTerms(), coupons=[], carried=D("0.000000"),
)
def test_statement_invariants(usage, plan, coupons, carried):
    built = build(usage=usage, plan=plan, coupons=coupons, carried_balance=carried)
    check_invariants(built, usage=usage, plan=plan, carried=carried)


@settings(max_examples=200, deadline=None)
@given(usage=st.lists(usage_group(), min_size=1, max_size=8))
def test_default_plan_bills_usage_less_the_free_tier(usage):
    """Pay as you go, no coupons: the total is the usage less min(0.50, usage), to the micro-dollar."""
    built = build(usage=usage, plan=PlanTerms())
    gross = sum((g.list_unit_price * g.quantity for g in usage if g.quantity > 0), D(0))
    assert built.total == gross - min(D("0.50"), gross)


@settings(max_examples=200, deadline=None)
@given(usage=st.lists(usage_group(), min_size=1, max_size=8), plan=plan_terms(), coupons=st.lists(coupon(), max_size=4))
def test_discounts_never_exceed_the_usage(usage, plan, coupons):
    """Steps 2-5 together take at most the usage amount: fees and balances are never discounted."""
    built = build(usage=usage, plan=plan, coupons=coupons)
    usage_total = sum((line.amount for line in built.lines if line.kind in ("usage", "late_usage")), D(0))
    discounts = -sum((line.amount for line in built.lines if line.kind in DISCOUNT_KINDS), D(0))
    assert 0 <= discounts <= usage_total


# --- Feature-restricted coupons ---------------------------------------------------------------------


def _two_features() -> list[UsageGroup]:
    return [
        UsageGroup("generation", "sd15", 30, 512, 512, False, False, D("0.004000"), 25_000),  # $100.00
        UsageGroup("upscaling", "", 0, 0, 0, False, False, D("0.030000"), 3_334),  # $100.02
    ]


def test_a_feature_coupon_discounts_only_its_feature():
    built = build(usage=_two_features(), plan=PlanTerms(free_tier_credit=D(0)),
                  coupons=[Coupon("GEN", "percent", D(100), frozenset({"generation"}))])
    assert [line.amount for line in built.lines if line.kind == "coupon"] == [D("-100.000000")]
    assert built.total == D("100.020000")


def test_two_coupons_on_one_feature_never_discount_another_feature():
    built = build(usage=_two_features(), plan=PlanTerms(free_tier_credit=D(0)),
                  coupons=[Coupon("A", "percent", D(100), frozenset({"generation"})),
                           Coupon("B", "percent", D(100), frozenset({"generation"}))])
    coupons = -sum(line.amount for line in built.lines if line.kind == "coupon")
    assert coupons <= D("100.000000")  # generation's usage
    assert built.total == D("100.020000")  # upscaling is untouched


def test_a_fixed_feature_coupon_after_a_volume_discount_leaves_other_features_billed():
    # 50% volume discount on everything: generation nets 50.00, upscaling 50.01. A $100 generation
    # coupon can take generation's 50.00, not upscaling's 50.01 too.
    built = build(usage=_two_features(), plan=PlanTerms(free_tier_credit=D(0), volume_tiers=(Tier(None, D(50)),)),
                  coupons=[Coupon("GEN100", "fixed", D(100), frozenset({"generation"}))])
    assert built.total >= D("50.010000")


@settings(max_examples=200, deadline=None)
@given(usage=st.lists(usage_group(), min_size=1, max_size=8), plan=plan_terms(),
       coupons=st.lists(coupon().filter(lambda c: c.features), min_size=1, max_size=4))
def test_feature_coupons_never_take_more_than_their_features_usage(usage, plan, coupons):
    """Coupons restricted to features take, together, at most those features' usage."""
    built = build(usage=usage, plan=plan, coupons=coupons)
    scope = frozenset().union(*(c.features for c in coupons))
    in_scope = sum((g.quantity * expected_unit(g, plan) for g in usage if g.feature in scope and g.quantity > 0), D(0))
    taken = -sum((line.amount for line in built.lines if line.kind == "coupon"), D(0))
    assert taken <= in_scope


@settings(max_examples=200, deadline=None)
@given(usage=st.lists(usage_group(), min_size=1, max_size=8), features=st.frozensets(st.sampled_from(FEATURES), min_size=1),
       repeats=st.integers(1, 3))
def test_full_feature_coupons_leave_exactly_the_other_features(usage, features, repeats):
    """No other credit: 100 % off some features (once or repeated) bills exactly the rest."""
    coupons = [Coupon(f"ALL{n}", "percent", D(100), features) for n in range(repeats)]
    built = build(usage=usage, plan=PlanTerms(free_tier_credit=D(0)), coupons=coupons)
    assert built.total == sum((g.list_unit_price * g.quantity for g in usage
                               if g.feature not in features and g.quantity > 0), D(0))


# --- Volume tiers, by hand --------------------------------------------------------------------------

THREE_TIERS = (Tier(D(100), D(0)), Tier(D(1000), D(10)), Tier(None, D(20)))


@pytest.mark.parametrize(
    "usage, mode, expected",
    [
        # Graduated: 0 % on the first 100, 10 % on 100-1000, 20 % above.
        ("50", "graduated", "0"),
        ("100", "graduated", "0"),
        ("100.000010", "graduated", "0.000001"),  # 10 % of 0.00001
        ("500", "graduated", "40"),  # 400 × 10 %
        ("1000", "graduated", "90"),  # 900 × 10 %
        ("1500", "graduated", "190"),  # 90 + 500 × 20 %
        ("10000", "graduated", "1890"),  # 90 + 9000 × 20 %
        # All units: the whole amount at the percent of the tier it reaches (bounds inclusive).
        ("50", "all_units", "0"),
        ("100", "all_units", "0"),
        ("100.000010", "all_units", "10.000001"),
        ("500", "all_units", "50"),
        ("1000", "all_units", "100"),
        ("1000.01", "all_units", "200.002"),
        ("1500", "all_units", "300"),
        ("0", "graduated", "0"),
        ("0", "all_units", "0"),
    ],
)
def test_volume_tiers_by_hand(usage, mode, expected):
    assert volume_discount(D(usage), THREE_TIERS, mode) == D(expected)
    # The order the tiers are given in does not matter.
    assert volume_discount(D(usage), THREE_TIERS[::-1], mode) == D(expected)


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("graduated", "2.932099"),  # 23.456789 × 12.5 % = 2.932098625 → half-up
        ("all_units", "15.432099"),  # 123.456789 × 12.5 % = 15.432098625 → half-up
    ],
)
def test_volume_tier_rounding_is_half_up_to_six_places(mode, expected):
    tiers = (Tier(D(100), D(0)), Tier(None, D("12.5")))
    assert volume_discount(D("123.456789"), tiers, mode) == D(expected)


def test_graduated_never_exceeds_all_units_on_increasing_tiers():
    for usage in ("0.01", "99.99", "100", "250", "999.99", "1000", "1000.01", "123456.789"):
        assert volume_discount(D(usage), THREE_TIERS, "graduated") <= volume_discount(D(usage), THREE_TIERS, "all_units")


def test_a_whole_statement_by_hand():
    """Every step of the money flow once, with figures computed by hand."""
    usage = [
        UsageGroup("generation", "sdxl", 50, 1024, 1824, False, False, D("0.169000"), 1000),  # 169.00
        UsageGroup("upscaling", "", 0, 0, 0, False, False, D("0.030000"), 2000),  # at 50 %: 0.015 → 30.00
        UsageGroup("generation", "sd15", 30, 512, 512, False, True, D("0.004000"), 500),  # spot 50 %: 1.00
    ]
    plan = PlanTerms(
        custom_rates={("upscaling", ""): CustomRate(percent_of_list=D(50))},
        spot_discount_percent=D(50),
        volume_mode="graduated",
        volume_tiers=(Tier(D(100), D(0)), Tier(None, D(10))),
        savings_commitment=D(250),
        savings_discount_percent=D(5),
        reserved_fee=D(20),
        reserved_included_usage=D(5),
    )
    built = build(usage=usage, plan=plan, coupons=[Coupon("GEN10", "percent", D(10), frozenset({"generation"}))],
                  carried_balance=D("0.30"))
    assert [(line.kind, line.quantity, line.unit_price, line.amount) for line in built.lines] == [
        ("usage", 500, D("0.002000"), D("1.000000")),
        ("usage", 1000, D("0.169000"), D("169.000000")),
        ("usage", 2000, D("0.015000"), D("30.000000")),
        ("volume_discount", 1, D("-10.000000"), D("-10.000000")),  # (200 - 100) × 10 %
        ("savings_discount", 1, D("-9.500000"), D("-9.500000")),  # 190 × 5 %
        # 10 % of what is left of generation's 170.00 after the volume and savings discounts,
        # which took 5 % and then 5 % of every feature: 170 × 0.95 × 0.95 = 153.425
        ("coupon", 1, D("-15.342500"), D("-15.342500")),
        ("free_tier", 1, D("-0.500000"), D("-0.500000")),
        ("commitment_shortfall", 1, D("84.842500"), D("84.842500")),  # 250 - 165.1575
        ("fixed_fee", 1, D("20.000000"), D("20.000000")),
        ("fixed_fee", 1, D("-5.000000"), D("-5.000000")),
        ("carried_balance", 1, D("0.300000"), D("0.300000")),
    ]
    assert built.total == D("264.800000")
    assert (built.amount_due_cents, built.carried_forward) == (26480, D(0))


@pytest.mark.parametrize(
    "quantity, carried, total, due, forward",
    [
        (124, "0", "0.000000", 0, "0.000000"),  # 0.496 of usage, all covered by the free tier
        (249, "0", "0.496000", 0, "0.496000"),  # under the minimum: carried
        (250, "0", "0.500000", 50, "0.000000"),  # the minimum exactly: charged
        (249, "0.004", "0.500000", 50, "0.000000"),  # carried balance tips it over
        (250, "0.00125", "0.501250", 50, "0.000000"),  # 50.125 cents → 50
        (250, "0.005", "0.505000", 51, "0.000000"),  # 50.5 cents → 51 (half-up, once)
    ],
)
def test_minimum_charge_and_rounding_to_cents(quantity, carried, total, due, forward):
    usage = [UsageGroup("generation", "sd15", 30, 512, 512, False, False, D("0.004000"), quantity)]
    built = build(usage=usage, plan=PlanTerms(), carried_balance=D(carried))
    assert (built.total, built.amount_due_cents, built.carried_forward) == (D(total), due, D(forward))


# --- With the database: ingest, preview, close, recompute ------------------------------------------

_slugs = itertools.count(1)
GEN_SHAPES = [
    ("sd15", 30, 512, 512), ("sd15", 50, 512, 768), ("sd15", 20, 640, 480), ("sd15", 1000, 64, 64),
    ("sdxl", 30, 1024, 1024), ("sdxl", 50, 1024, 1824), ("sdxl", 150, 2048, 1024), ("sdxl", 31, 1000, 1100),
]


def month_bounds(month: date) -> tuple[datetime, datetime]:
    start = datetime(month.year, month.month, 1, tzinfo=timezone.utc)
    after = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
    return start, datetime(after.year, after.month, 1, tzinfo=timezone.utc)


@st.composite
def raw_event(draw, month: date) -> dict:
    """An event body occurring in `month`, often on its first or last instant."""
    start, end = month_bounds(month)
    offset = draw(st.one_of(
        st.just(timedelta(0)),
        st.just(end - start - timedelta(microseconds=1)),
        st.integers(0, int((end - start).total_seconds()) - 1).map(lambda s: timedelta(seconds=s)),
    ))
    body: dict = {"occurred_at": (start + offset).isoformat()}
    feature = draw(st.sampled_from(["generation"] * 3 + list(ADD_ONS)))
    body["feature"] = feature
    if feature == "generation":
        model, steps, width, height = draw(st.sampled_from(GEN_SHAPES))
        body.update(model=model, steps=steps, width=width, height=height,
                    composition_control=draw(st.booleans()))
    body["quantity"] = draw(st.one_of(st.integers(1, 5), st.integers(1, 2000)))
    if draw(st.booleans()):
        body["spot"] = draw(st.booleans())
    return body


@st.composite
def scenario(draw) -> dict:
    month = draw(st.sampled_from([date(2024, 2, 1), date(2025, 2, 1), date(2025, 12, 1), date(2026, 7, 1)]))
    previous = (month - timedelta(days=1)).replace(day=1)
    following = month_bounds(month)[1].date()
    plan = None
    if draw(st.booleans()):
        plan = {
            "free_tier_credit": draw(st.sampled_from([D("0.50"), D(0)]) | decimals("0", "5")),
            "spot_discount_percent": draw(decimals("0", "100", 2)),
            "rate": draw(st.none() | st.tuples(st.sampled_from(FEATURES), decimals("0", "200", 3))),
        }
    discount = draw(st.none() | st.one_of(
        st.tuples(st.just("percent"), decimals("0", "100", 2)),
        st.tuples(st.just("fixed"), decimals("0", "3")),
    ))
    return {
        "month": month,
        # Events of the month, and a few of the month before (billed on that month's own statement).
        "events": draw(st.lists(raw_event(month), max_size=25)),
        "earlier": draw(st.lists(raw_event(previous), max_size=2)),
        # After the close: late events for the month, and the next month's own usage.
        "late": draw(st.lists(raw_event(month), max_size=5)),
        "next": draw(st.lists(raw_event(following), max_size=5)),
        "plan": plan,
        "discount": discount,
    }


def _ingest(workspace, api_key, bodies: list[dict], prefix: str, now: datetime) -> None:
    from usage.services import ACCEPTED, events_ingest

    raw = [dict(body, event_id=f"{prefix}-{n}") for n, body in enumerate(bodies)]
    for start in range(0, len(raw), 1000):
        result = events_ingest(workspace=workspace, api_key=api_key, raw_events=raw[start : start + 1000], now=now)
        assert [r.status for r in result.results] == [ACCEPTED] * len(raw[start : start + 1000]), [
            (r.event_id, r.errors) for r in result.results if r.status != ACCEPTED
        ]


def _recompute(rows, *, month: date, plan: dict | None, discount, carried: Decimal) -> dict:
    """The statement, from raw UsageEvent rows, by the rules of docs/money-flow.md (not billing/statement.py).

    Returns the usage lines as a Counter of (kind, late month or None, quantity, unit, amount), the
    other lines in order as (kind, amount), the total, the cents due and the amount carried."""
    month_start, _ = month_bounds(month)
    quantities: dict[tuple, int] = defaultdict(int)
    for row in rows:
        late_for = None if row["occurred_at"] >= month_start else row["occurred_at"].date().replace(day=1)
        dims = (row["feature"], row["model"], row["steps"] or 0, row["width"] or 0, row["height"] or 0,
                row["composition_control"], row["spot"], row["unit_price"])
        quantities[(late_for, dims)] += row["quantity"]
    usage_lines: Counter = Counter()
    usage_total = D(0)
    for (late_for, dims), quantity in quantities.items():
        feature, spot, unit = dims[0], dims[6], dims[7]
        if plan is not None:
            if plan["rate"] is not None and plan["rate"][0] == feature:
                unit = q6(unit * plan["rate"][1] / 100)
            if spot:
                unit = unit - q6(unit * plan["spot_discount_percent"] / 100)
        amount = unit * quantity
        usage_total += amount
        usage_lines[("late_usage" if late_for else "usage", late_for, quantity, q6(unit), q6(amount))] += 1
    running, others = usage_total, []
    if discount is not None:
        kind, value = discount
        off = q6(running * value / 100) if kind == "percent" else value
        off = min(off, running)
        if off > 0:
            others.append(("coupon", -off))
            running -= off
    free = min(plan["free_tier_credit"] if plan else D("0.50"), running)
    if free > 0:
        others.append(("free_tier", -free))
        running -= free
    if carried:
        others.append(("carried_balance", carried))
        running += carried
    if running >= MINIMUM:
        return {"usage": usage_lines, "others": others, "total": running, "due": cents(running), "forward": D(0)}
    return {"usage": usage_lines, "others": others, "total": running, "due": 0, "forward": running}


def _as_lines(lines) -> tuple[Counter, list]:
    usage: Counter = Counter()
    others = []
    for line in lines:
        if line.kind in ("usage", "late_usage"):
            late_for = None
            if line.kind == "late_usage":
                late_for = datetime.strptime(line.description.split(":")[0], "Late usage for %B %Y").date()
            usage[(line.kind, late_for, line.quantity, line.unit_price, line.amount)] += 1
        else:
            others.append((line.kind, line.amount))
    return usage, others


def _close_and_check(workspace, period: date, now: datetime, expected: dict):
    """Preview, then close at the same instant: the same lines, and the independent figures."""
    from billing.close import statement_close
    from billing.drafts import statement_draft
    from billing.models import Statement, StatementLine

    draft = statement_draft(workspace, period, now=now)
    statement, created = statement_close(workspace, period, now=now)
    expected_empty = not expected["usage"] and not expected["others"]
    if expected_empty:
        assert draft.is_empty and statement is None
        return None
    assert created and statement.status == Statement.Status.FINALIZED

    stored = list(StatementLine.objects.filter(statement=statement).order_by("position"))
    assert [(s.kind, s.description, s.quantity, s.unit_price, s.amount) for s in stored] == [
        (d.kind, d.description, d.quantity, d.unit_price, d.amount) for d in draft.built.lines
    ]
    assert [s.position for s in stored] == list(range(1, len(stored) + 1))
    statement.refresh_from_db()
    assert (statement.total, statement.amount_due_cents, statement.carried_forward) == (
        draft.built.total, draft.built.amount_due_cents, draft.built.carried_forward
    )
    assert statement.total == sum((s.amount for s in stored), D(0))

    usage, others = _as_lines(stored)
    assert usage == expected["usage"]
    assert others == expected["others"]
    assert (statement.total, statement.amount_due_cents, statement.carried_forward) == (
        expected["total"], expected["due"], expected["forward"]
    )
    return statement


@pytest.mark.django_db
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=scenario())
def test_closed_statements_equal_the_preview_and_the_raw_ledger(case):
    from billing.models import Discount, Plan, PlanAssignment, PlanRate
    from usage.models import UsageEvent
    from workspaces.services import api_key_create, workspace_create

    month = case["month"]
    start, end = month_bounds(month)
    following = end.date()
    _, following_end = month_bounds(following)

    with transaction.atomic():  # every example rolls back: nothing leaks into the next one
        slug = f"money-{next(_slugs)}-{uuid.uuid4().hex[:8]}"
        workspace = workspace_create(slug=slug, owner_email=f"{slug}@test.example")
        api_key = api_key_create(workspace=workspace, name="money").api_key
        plan = case["plan"]
        if plan is not None:
            row = Plan.objects.create(name=f"plan-{slug}", free_tier_credit=plan["free_tier_credit"],
                                      spot_discount_percent=plan["spot_discount_percent"])
            if plan["rate"] is not None:
                PlanRate.objects.create(plan=row, feature=plan["rate"][0], model="", percent_of_list=plan["rate"][1])
            PlanAssignment.objects.create(workspace=workspace, plan=row,
                                          effective_from=datetime(2024, 1, 1, tzinfo=timezone.utc))
        if case["discount"] is not None:
            kind, value = case["discount"]
            Discount.objects.create(workspace=workspace, name="property coupon", kind=kind, value=value,
                                    duration=Discount.Duration.FOREVER, starts_on=month - timedelta(days=40))

        # The month's events arrive on time; the month closes two days after it ends.
        _ingest(workspace, api_key, case["events"], "on-time", now=end + timedelta(hours=1))
        _ingest(workspace, api_key, case["earlier"], "earlier", now=end + timedelta(hours=1))
        first_close = end + timedelta(days=2)
        rows = UsageEvent.objects.filter(workspace=workspace).values(
            "event_id", "occurred_at", "feature", "model", "steps", "width", "height", "composition_control",
            "spot", "quantity", "unit_price", "amount")
        for row in rows:  # priced on arrival: amount = unit × quantity, 6 dp
            assert row["amount"] == row["unit_price"] * row["quantity"] and has_six_places(row["amount"])
        # The month before has its own statement (months close in order), then the month.
        previous = (month - timedelta(days=1)).replace(day=1)
        expected_before = _recompute([r for r in rows if r["event_id"].startswith("earlier")], month=previous,
                                     plan=plan, discount=case["discount"], carried=D(0))
        before = _close_and_check(workspace, previous, first_close, expected_before)
        expected = _recompute([r for r in rows if r["event_id"].startswith("on-time")], month=month, plan=plan,
                              discount=case["discount"], carried=expected_before["forward"])
        first = _close_and_check(workspace, month, first_close, expected)

        # Then late events for the month, and the next month's usage; the next month closes.
        _ingest(workspace, api_key, case["late"], "late", now=first_close + timedelta(hours=1))
        _ingest(workspace, api_key, case["next"], "next", now=following_end + timedelta(hours=1))
        rows = UsageEvent.objects.filter(workspace=workspace).exclude(
            event_id__startswith="on-time").exclude(event_id__startswith="earlier").values(
            "occurred_at", "feature", "model", "steps", "width", "height", "composition_control", "spot",
            "quantity", "unit_price")
        carried = expected["forward"]
        if first is None:
            # The month had nothing to bill, so it is still open: its late events are its own, on
            # its statement, closed before the next month (months close in order).
            expected_late = _recompute([r for r in rows if r["occurred_at"] < end], month=month, plan=plan,
                                       discount=case["discount"], carried=expected_before["forward"])
            first = _close_and_check(workspace, month, following_end + timedelta(days=2), expected_late)
            rows = [r for r in rows if r["occurred_at"] >= end]
            carried = expected_late["forward"]
        expected_next = _recompute(list(rows), month=following, plan=plan, discount=case["discount"],
                                   carried=carried)
        second = _close_and_check(workspace, following, following_end + timedelta(days=2), expected_next)

        # Nothing lost, nothing billed twice: the two statements bill every unit of every event once.
        billed = sum(
            line.quantity
            for statement in (before, first, second) if statement is not None
            for line in statement.lines.all() if line.kind in ("usage", "late_usage")
        )
        assert billed == sum(e.get("quantity", 1) for key in ("events", "earlier", "late", "next") for e in case[key])
        transaction.set_rollback(True)

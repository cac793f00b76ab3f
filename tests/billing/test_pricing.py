"""The pricing rule against the pricing page's table (docs/pricing.md), cell for cell, and off the table."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pricing.rules import (
    PriceBookHistory,
    PriceBookSnapshot,
    PricingError,
    Rate,
    UsageItem,
    price_item,
    unit_price,
)

# The pricing page (docs/pricing.md), transcribed: steps → prices per
# height, width fixed at 512 (SD 1.5) or 1024 (SDXL).
SD15_HEIGHTS = [512, 576, 640, 688, 704, 768, 912, 1024]
SD15 = {
    30: "0.004 0.005 0.006 0.007 0.008 0.009 0.013 0.016",
    50: "0.007 0.008 0.010 0.012 0.013 0.015 0.021 0.027",
    100: "0.013 0.017 0.021 0.024 0.025 0.030 0.042 0.053",
    150: "0.020 0.025 0.031 0.036 0.038 0.045 0.063 0.080",
}
SDXL_HEIGHTS = [1024, 1152, 1280, 1376, 1408, 1536, 1824, 2048]
SDXL = {
    30: "0.032 0.041 0.050 0.058 0.061 0.072 0.102 0.128",
    50: "0.053 0.068 0.083 0.096 0.101 0.120 0.169 0.213",
    100: "0.107 0.135 0.167 0.193 0.202 0.240 0.338 0.427",
    150: "0.160 0.203 0.250 0.289 0.303 0.360 0.508 0.640",
}
ADD_ONS = {
    "background_removal": "0.100",
    "detection": "0.030",
    "upscaling": "0.030",
    "captioning": "0.015",
    "magic_prompt": "0.015",
    "pixelate": "0.015",
    "training": "5.00",
}


def seed_cells():
    for model, width, heights, table in (("sd15", 512, SD15_HEIGHTS, SD15), ("sdxl", 1024, SDXL_HEIGHTS, SDXL)):
        for steps, row in table.items():
            for height, price in zip(heights, row.split(), strict=True):
                yield pytest.param(model, steps, width, height, Decimal(price), id=f"{model}-{steps}-{width}x{height}")


SEED_CELLS = list(seed_cells())

SEED_BOOK = PriceBookSnapshot(
    version=1,
    effective_from=datetime(2024, 1, 1, tzinfo=timezone.utc),
    composition_multiplier=Decimal("1.2"),
    unit_quantum=Decimal("0.001"),
    rates={
        ("generation", "sd15"): Rate("generation", "sd15", "steps_pixels", Decimal("0.004"), 30, 512 * 512),
        ("generation", "sdxl"): Rate("generation", "sdxl", "steps_pixels", Decimal("0.032"), 30, 1024 * 1024),
        **{(feature, ""): Rate(feature, "", "flat", Decimal(price)) for feature, price in ADD_ONS.items()},
    },
)


def generation(model="sd15", steps=30, width=512, height=512, quantity=1, composition=False) -> UsageItem:
    return UsageItem(
        feature="generation", model=model, steps=steps, width=width, height=height,
        quantity=quantity, composition_control=composition,
    )


def test_the_table_has_64_cells():
    assert len(SEED_CELLS) == 64


@pytest.mark.parametrize("model, steps, width, height, expected", SEED_CELLS)
def test_every_seed_cell(model, steps, width, height, expected):
    assert unit_price(SEED_BOOK, generation(model, steps, width, height)) == expected


@pytest.mark.parametrize("model, steps, width, height, expected", SEED_CELLS)
def test_seed_cells_are_symmetric_in_width_and_height(model, steps, width, height, expected):
    assert unit_price(SEED_BOOK, generation(model, steps, height, width)) == expected


@pytest.mark.parametrize("model, steps, width, height, expected", SEED_CELLS)
def test_every_seed_cell_from_the_database_price_book(db, model, steps, width, height, expected):
    """The migrated version 1 is the seed, not just the test's copy of it."""
    from pricing.selectors import price_book_history

    book = price_book_history().at(datetime(2026, 11, 1, tzinfo=timezone.utc))
    assert book.version == 1
    assert unit_price(book, generation(model, steps, width, height)) == expected


def test_product_brief_check_value():
    assert unit_price(SEED_BOOK, generation("sdxl", 50, 1024, 1824)) == Decimal("0.169")


def test_composition_control_multiplies_the_rounded_unit_exactly():
    assert unit_price(SEED_BOOK, generation(composition=True)) == Decimal("0.004800")
    # 0.169 rounded first, then × 1.2 = 0.2028 exactly (not 0.16922 × 1.2 = 0.203064).
    assert unit_price(SEED_BOOK, generation("sdxl", 50, 1024, 1824, composition=True)) == Decimal("0.202800")


@pytest.mark.parametrize("feature, price", ADD_ONS.items())
def test_add_ons_are_flat_per_unit(feature, price):
    priced = price_item(SEED_BOOK, UsageItem(feature=feature, quantity=3))
    assert priced.unit_price == Decimal(price)
    assert priced.amount == Decimal(price) * 3
    assert priced.price_book == 1


@pytest.mark.parametrize(
    "model, steps, width, height, expected",
    [
        # Below the reference steps or size costs the reference price (max(steps, 30), max(px, P0)).
        ("sd15", 10, 512, 512, "0.004"),
        ("sd15", 30, 256, 256, "0.004"),
        ("sdxl", 20, 512, 512, "0.032"),
        # Between table rows and columns: the same rule.
        ("sd15", 40, 512, 512, "0.005"),  # 0.004 × 40/30 = 0.00533 → 0.005
        ("sd15", 45, 512, 512, "0.006"),  # 0.004 × 1.5 = 0.006 exactly
        ("sdxl", 75, 1024, 1024, "0.080"),  # 0.032 × 2.5 = 0.08
        ("sdxl", 30, 1024, 1088, "0.036"),  # 0.032 × (1088/1024)² = 0.036125 → 0.036
        # Past the table: 200 steps, 2048², non-square and landscape.
        ("sd15", 200, 512, 512, "0.027"),  # 0.02667 → 0.027
        ("sdxl", 30, 2048, 2048, "0.512"),  # (4)² = 16 × 0.032
        ("sd15", 30, 768, 512, "0.009"),
        ("sdxl", 1000, 8192, 8192, "4369.067"),  # the documented upper bounds still price
    ],
)
def test_off_the_table(model, steps, width, height, expected):
    assert unit_price(SEED_BOOK, generation(model, steps, width, height)) == Decimal(expected)


def test_a_value_exactly_on_the_half_rounds_up():
    book = PriceBookSnapshot(
        version=9, effective_from=SEED_BOOK.effective_from, composition_multiplier=Decimal("1.2"),
        unit_quantum=Decimal("0.001"),
        rates={("generation", "sd15"): Rate("generation", "sd15", "steps_pixels", Decimal("0.0025"), 30, 512 * 512)},
    )
    # 0.0025 × 1 = 0.0025 → half-up 0.003 (banker's rounding would give 0.002).
    assert unit_price(book, generation()) == Decimal("0.003")
    # 0.0025 × 33/30 = 0.00275 exactly → 0.003; a float product would be 0.0027499999…
    assert unit_price(book, generation(steps=33)) == Decimal("0.003")


def test_amount_is_unit_times_quantity_to_six_places():
    priced = price_item(SEED_BOOK, generation("sd15", quantity=125, composition=True))
    assert priced.unit_price == Decimal("0.004800")
    assert priced.amount == Decimal("0.600000")
    assert str(priced.amount) == "0.600000"


def test_unknown_pricing_model_and_missing_rate_raise():
    broken = PriceBookSnapshot(
        version=2, effective_from=SEED_BOOK.effective_from, composition_multiplier=Decimal(1),
        unit_quantum=Decimal("0.001"),
        rates={("pixelate", ""): Rate("pixelate", "", "per_moon_phase", Decimal("1"))},
    )
    with pytest.raises(PricingError, match="Unknown pricing model"):
        unit_price(broken, UsageItem(feature="pixelate"))
    with pytest.raises(PricingError, match="no price for upscaling"):
        unit_price(broken, UsageItem(feature="upscaling"))
    with pytest.raises(PricingError, match="needs steps"):
        unit_price(SEED_BOOK, UsageItem(feature="generation", model="sd15"))


def test_history_picks_the_version_in_force():
    v2 = PriceBookSnapshot(
        version=2, effective_from=datetime(2026, 12, 1, tzinfo=timezone.utc),
        composition_multiplier=Decimal("1.2"), unit_quantum=Decimal("0.001"), rates={},
    )
    history = PriceBookHistory([v2, SEED_BOOK])
    assert history.at(datetime(2023, 12, 31, 23, 59, tzinfo=timezone.utc)) is None
    assert history.at(datetime(2024, 1, 1, tzinfo=timezone.utc)).version == 1
    assert history.at(datetime(2026, 11, 30, 23, 59, 59, tzinfo=timezone.utc)).version == 1
    assert history.at(datetime(2026, 12, 1, tzinfo=timezone.utc)).version == 2


@given(
    model=st.sampled_from(["sd15", "sdxl"]),
    steps=st.integers(1, 1000),
    width=st.integers(64, 8192),
    height=st.integers(64, 8192),
    quantity=st.integers(1, 100_000),
    composition=st.booleans(),
)
def test_prices_are_exact_monotonic_and_never_below_the_base(model, steps, width, height, quantity, composition):
    item = generation(model, steps, width, height, quantity, composition)
    priced = price_item(SEED_BOOK, item)
    base = Decimal("0.004") if model == "sd15" else Decimal("0.032")
    assert priced.unit_price >= base
    assert priced.amount == priced.unit_price * quantity
    assert priced.unit_price.as_tuple().exponent == -6
    # More steps or more pixels never cost less.
    assert unit_price(SEED_BOOK, generation(model, steps + 1, width, height, 1, composition)) >= priced.unit_price
    assert unit_price(SEED_BOOK, generation(model, steps, width + 8, height, 1, composition)) >= priced.unit_price

"""Pricing: pure functions from a price-book snapshot and a usage item to a price.

No ORM here: callers pass frozen snapshots (billing.selectors builds them from the database),
so pricing is exact, fast and testable on its own.

The rule (docs/pricing.md), reproducing the pricing page's 64 generation cells exactly:

    unit = round_half_up(base × max(steps, S0)/S0 × (max(w × h, P0)/P0)², quantum)

then × the composition-control multiplier (kept exact), then amount = unit × quantity.
Computed with exact fractions, so a value that lands on a half rounds up, never by float luck.

Warning: events keep the price they were given when they arrived. Changing this module changes
the price of new events only; it must still reproduce every version in the database.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from core.money import MONEY

FEATURES: tuple[str, ...] = (
    "generation",
    "background_removal",
    "detection",
    "upscaling",
    "captioning",
    "magic_prompt",
    "pixelate",
    "training",
)
GENERATION = "generation"
MODELS: tuple[str, ...] = ("sd15", "sdxl")


class PricingError(ValueError):
    """The item cannot be priced with this price book (no rate, missing dimensions)."""


@dataclass(frozen=True)
class Rate:
    """One line of a price book. `model` is "" for features priced the same for every model."""

    feature: str
    model: str
    pricing_model: str  # a key of PRICING_MODELS
    unit_price: Decimal  # USD per unit; for steps_pixels, the price at the reference size
    reference_steps: int | None = None
    reference_pixels: int | None = None


@dataclass(frozen=True)
class PriceBookSnapshot:
    version: int
    effective_from: datetime
    composition_multiplier: Decimal
    unit_quantum: Decimal  # generation unit prices round half-up to this (0.001)
    rates: Mapping[tuple[str, str], Rate] = field(default_factory=dict)
    id: int | None = None  # the database row, when the snapshot came from one
    # The prices worked out under this version (price_item), by item: a snapshot never changes,
    # and a few dozen items make up nearly all usage. Not part of the value.
    prices: dict = field(default_factory=dict, compare=False, repr=False, hash=False)

    def rate_for(self, feature: str, model: str) -> Rate:
        rate = self.rates.get((feature, model)) or self.rates.get((feature, ""))
        if rate is None:
            what = f"{feature}/{model}" if model else feature
            raise PricingError(f"Price book {self.version} has no price for {what}.")
        return rate


@dataclass(frozen=True)
class UsageItem:
    feature: str
    quantity: int = 1
    model: str = ""
    steps: int | None = None
    width: int | None = None
    height: int | None = None
    composition_control: bool = False


@dataclass(frozen=True)
class Price:
    unit_price: Decimal  # USD per unit, 6 dp
    quantity: int
    amount: Decimal  # USD, 6 dp
    price_book: int


def _round_half_up(value: Fraction, quantum: Decimal) -> Decimal:
    steps = value / Fraction(quantum)
    whole = (steps.numerator * 2 + steps.denominator) // (steps.denominator * 2)  # floor(x + ½)
    return whole * quantum


def _flat(rate: Rate, item: UsageItem, book: PriceBookSnapshot) -> Decimal:
    return rate.unit_price


def _steps_pixels(rate: Rate, item: UsageItem, book: PriceBookSnapshot) -> Decimal:
    if item.steps is None or item.width is None or item.height is None:
        raise PricingError(f"{item.feature} needs steps, width and height to be priced.")
    if not rate.reference_steps or not rate.reference_pixels:
        raise PricingError(
            f"Price book {book.version}: {rate.feature}/{rate.model} lacks reference steps/pixels."
        )
    steps = max(item.steps, rate.reference_steps)
    pixels = max(item.width * item.height, rate.reference_pixels)
    exact = (
        Fraction(rate.unit_price)
        * Fraction(steps, rate.reference_steps)
        * Fraction(pixels, rate.reference_pixels) ** 2
    )
    return _round_half_up(exact, book.unit_quantum)


PRICING_MODELS: dict[str, Callable[[Rate, UsageItem, PriceBookSnapshot], Decimal]] = {
    "flat": _flat,
    "steps_pixels": _steps_pixels,
}


def unit_price(book: PriceBookSnapshot, item: UsageItem) -> Decimal:
    """The price of one unit of `item` under `book`, USD to 6 dp."""
    rate = book.rate_for(item.feature, item.model)
    try:
        pricing_model = PRICING_MODELS[rate.pricing_model]
    except KeyError:
        raise PricingError(f"Unknown pricing model {rate.pricing_model!r}.") from None
    unit = pricing_model(rate, item, book)
    if item.composition_control:
        unit = unit * book.composition_multiplier
    return unit.quantize(MONEY, rounding=ROUND_HALF_UP)


PRICES_REMEMBERED = 10_000  # per price-book version


def price_item(book: PriceBookSnapshot, item: UsageItem) -> Price:
    """The price of `item` under `book`; worked out once per version and item (the Fractions of
    steps_pixels cost a single-event request 5 % of its time), then remembered on the snapshot."""
    price = book.prices.get(item)
    if price is None:
        unit = unit_price(book, item)
        price = Price(
            unit_price=unit,
            quantity=item.quantity,
            amount=(unit * item.quantity).quantize(MONEY),
            price_book=book.version,
        )
        if len(book.prices) < PRICES_REMEMBERED:
            book.prices[item] = price
    return price


class PriceBookHistory:
    """Every version, ordered; finds the one in force at an instant."""

    def __init__(self, books: Iterable[PriceBookSnapshot]):
        self.books = sorted(books, key=lambda book: book.effective_from)
        self._starts = [book.effective_from for book in self.books]

    def at(self, instant: datetime) -> PriceBookSnapshot | None:
        index = bisect.bisect_right(self._starts, instant)
        return self.books[index - 1] if index else None

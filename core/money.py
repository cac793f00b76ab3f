"""Money, in one place. Pure: no ORM, no settings.

Amounts are USD `Decimal`s with 6 places (MONEY), or integer micro-dollars (MICROS per dollar) where
they are summed at speed (rollups, the hard limit's counters); never floats. Cents appear once, on
the amount a statement charges (`cents`). The formatters are for people: whole cents, half up
(`usd`), a unit price with the places it needs (`usd_precise`), and the 6-place text of the API
(`decimal_text`).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

MONEY = Decimal("0.000001")  # the quantum of every stored amount
CENT = Decimal("0.01")
HUNDRED = Decimal(100)
ZERO = Decimal("0.000000")
MICROS = 1_000_000  # micro-dollars per dollar
CURRENCY = "USD"  # every amount; Stripe is charged in "usd"


def money(value: Decimal) -> Decimal:
    """An amount rounded half-up to 6 places."""
    return value.quantize(MONEY, rounding=ROUND_HALF_UP)


def percent_of(amount: Decimal, percent: Decimal) -> Decimal:
    return money(amount * percent / HUNDRED)


def to_micros(amount: Decimal) -> int:
    """A USD amount with at most 6 places as integer micro-dollars (exact)."""
    return int(amount * MICROS)


def from_micros(micros: int) -> Decimal:
    """Integer micro-dollars as a Decimal with 6 places (exact)."""
    return Decimal(int(micros)).scaleb(-6).quantize(MONEY)


def cents(amount: Decimal) -> int:
    """What is charged for `amount`: whole cents, half up (the one rounding to cents)."""
    return int((amount * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def decimal_text(value: Decimal | None) -> str | None:
    """The API's text form of an amount: 6 places, e.g. "4.880000"."""
    return None if value is None else f"{value:.6f}"


def usd(amount: Decimal | None) -> str:
    """For people: $1,234.56 (half up to cents; a minus sign for credits), "—" for nothing."""
    if amount is None:
        return "—"
    rounded = Decimal(amount).quantize(CENT, rounding=ROUND_HALF_UP)
    sign = "−" if rounded < 0 else ""
    return f"{sign}${abs(rounded):,.2f}"


def usd_precise(amount: Decimal | None) -> str:
    """A unit price with the places it needs: $0.004, $0.0048, $0.169, $5.00."""
    if amount is None:
        return "—"
    sign = "−" if amount < 0 else ""
    amount = abs(Decimal(amount))
    text = f"{amount.normalize():f}"
    places = len(text.split(".")[1]) if "." in text else 0
    return f"{sign}${amount:,.{max(places, 2)}f}"


def usd_cents(amount_cents: int) -> str:
    """Integer cents as dollars: $4.88."""
    return usd(Decimal(int(amount_cents)) / 100)

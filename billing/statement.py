"""Building a month's statement: pure, from plain values to itemised lines. No ORM here.

The order is the money flow of docs/money-flow.md, each step a visible line:

1. usage (and late usage) per feature / model × steps × size × composition, at the plan's custom
   rates and spot rate;
2. volume discount tiers (graduated or all-units) on the usage amount;
3. savings-plan discount (percent of usage after the volume discount);
4. coupons (percent or fixed, optionally only on some features), in their given order;
5. the free-tier credit, never more than what is left;
6. commitment shortfall: the savings commitment minus discounted usage (after step 4,
   before the free tier), when positive;
7. fixed fees (reserved capacity), less the usage the fee includes (never more than the usage
   left after the free tier);
8. prepaid credits: the workspace's credit balance pays the month's own charges (usage after every
   discount and the free tier, the commitment shortfall and the fixed fees), never more than
   they come to: what is not needed stays in the wallet. Before tax: credits are money paid in
   advance for the service, so the tax is on what the month costs after them, like a discount;
   not on the carried balance or corrections, which were billed (and taxed) on earlier statements;
9. tax: the workspace's rate (staff set it per workspace or per country; none is 0) on the month's
   own charges, i.e. the running total after steps 1-8, every discount and credit included,
   rounded half-up to whole cents, as its own line. The carried balance and the corrections below
   were taxed on the statements they come from, so they come after it and are not taxed again;
10. the balance carried from earlier months (a total below Stripe's minimum charge);
11. adjustments from corrected statements: when staff reissue a statement whose carried balance a
   later statement had already billed, the difference is owed (or credited) here, once. A credit
   never takes the total below zero; what it cannot take is returned as `unapplied_credit`, to
   be applied on the next statement.

Every amount is a Decimal with 6 places, rounded half-up where a percentage makes more; cents
are rounded once, on the amount due. No discount takes more than what is left to discount, so no
step makes the running total negative.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

from core.money import CENT, MONEY, ZERO, cents, money, percent_of

MINIMUM_CHARGE = Decimal("0.50")  # Stripe's minimum for USD; below it the total is carried

FEATURE_NAMES = {
    "generation": "Image generation",
    "background_removal": "Background removal",
    "detection": "Detection",
    "upscaling": "Upscaling",
    "captioning": "Captioning",
    "magic_prompt": "Magic prompt",
    "pixelate": "Pixelate",
    "training": "Generator training",
}



@dataclass(frozen=True)
class UsageGroup:
    """Usage summed per billable dimension and list unit price (from the rollups)."""

    feature: str
    model: str
    steps: int
    width: int
    height: int
    composition_control: bool
    spot: bool
    list_unit_price: Decimal
    quantity: int
    late_for: date | None = None  # the earlier month this late usage belongs to


@dataclass(frozen=True)
class CustomRate:
    percent_of_list: Decimal | None = None
    unit_price: Decimal | None = None


@dataclass(frozen=True)
class Tier:
    up_to: Decimal | None  # USD; None: no upper bound
    discount_percent: Decimal


@dataclass(frozen=True)
class PlanTerms:
    name: str = "Pay as you go"
    free_tier_credit: Decimal = Decimal("0.50")
    custom_rates: Mapping[tuple[str, str], CustomRate] = field(default_factory=dict)
    spot_discount_percent: Decimal = Decimal(0)
    volume_mode: str = "graduated"
    volume_tiers: Sequence[Tier] = ()
    savings_commitment: Decimal | None = None
    savings_discount_percent: Decimal = Decimal(0)
    reserved_fee: Decimal | None = None
    reserved_included_usage: Decimal | None = None


@dataclass(frozen=True)
class Coupon:
    name: str
    kind: str  # "percent" | "fixed"
    value: Decimal
    features: frozenset[str] = frozenset()  # empty: every feature


@dataclass(frozen=True)
class Tax:
    name: str  # as on the invoice, e.g. "VAT"
    percent: Decimal


NO_TAX = Tax("Tax", Decimal(0))


@dataclass(frozen=True)
class Adjustment:
    description: str
    amount: Decimal  # positive: owed; negative: a credit


@dataclass(frozen=True)
class Line:
    kind: str
    description: str
    quantity: int
    unit_price: Decimal
    amount: Decimal


@dataclass(frozen=True)
class Built:
    lines: tuple[Line, ...]
    total: Decimal  # USD, 6 dp, never negative
    amount_due_cents: int  # what is charged; 0 when carried
    carried_forward: Decimal  # a total below the minimum, owed next month
    unapplied_credit: Decimal = ZERO  # adjustment credit left over for a later statement (≥ 0)
    tax: Decimal = ZERO  # the tax line's amount (whole cents)
    tax_rate: Tax = NO_TAX
    credits_applied: Decimal = ZERO  # the prepaid credits line (≥ 0): what the close consumes


def _describe(group: UsageGroup) -> str:
    name = FEATURE_NAMES.get(group.feature, group.feature)
    if group.feature == "generation":
        name = f"{name} {group.model.upper()} · {group.steps} steps · {group.width}×{group.height}"
        if group.composition_control:
            name += " · composition control"
    if group.spot:
        name += " · spot"
    if group.late_for is not None:
        name = f"Late usage for {group.late_for:%B %Y}: {name}"
    return name


def unit_price_for(group: UsageGroup, plan: PlanTerms) -> Decimal:
    """The unit price the plan charges: custom rate (model-specific first), then spot."""
    rate = plan.custom_rates.get((group.feature, group.model)) or plan.custom_rates.get((group.feature, ""))
    unit = group.list_unit_price
    if rate is not None:
        unit = rate.unit_price if rate.unit_price is not None else percent_of(unit, rate.percent_of_list)
    if group.spot and plan.spot_discount_percent:
        unit = unit - percent_of(unit, plan.spot_discount_percent)
    return money(max(unit, ZERO))


def volume_discount(usage: Decimal, tiers: Sequence[Tier], mode: str) -> Decimal:
    """Graduated: each slice of the usage amount at its tier's percent. All-units: the whole
    amount at the percent of the tier the amount reaches."""
    ordered = sorted(tiers, key=lambda t: (t.up_to is None, t.up_to or 0))
    if not ordered or usage <= 0:
        return ZERO
    if mode == "all_units":
        tier = next((t for t in ordered if t.up_to is None or usage <= t.up_to), ordered[-1])
        return percent_of(usage, tier.discount_percent)
    if mode != "graduated":
        raise ValueError(f"Unknown volume mode {mode!r}")
    discount, floor = ZERO, Decimal(0)
    for n, tier in enumerate(ordered):
        # Above the last tier's bound, the last tier's percent applies, as in all-units mode.
        last = n == len(ordered) - 1
        ceiling = usage if tier.up_to is None or last else min(usage, tier.up_to)
        if ceiling > floor:
            discount += percent_of(ceiling - floor, tier.discount_percent)
        if last or tier.up_to is None or usage <= tier.up_to:
            break
        floor = tier.up_to
    return min(discount, usage)


@dataclass
class _Statement:
    """A statement while it is built: its lines, the running total, and what is left of each
    feature's usage after the credits so far (unrounded shares, so that a feature coupon only ever
    takes from its own features' net usage)."""

    lines: list[Line] = field(default_factory=list)
    running: Decimal = ZERO
    left_by_feature: dict[str, Decimal] = field(default_factory=dict)
    discounted_usage: Decimal = ZERO  # usage after every discount, before the free tier
    after_free_tier: Decimal = ZERO  # what the free tier left

    def charge(self, kind: str, description: str, amount: Decimal, quantity: Decimal | int = 1, unit: Decimal | None = None) -> None:
        self.lines.append(Line(kind, description, quantity, amount if unit is None else unit, amount))
        self.running += amount

    def credit(self, kind: str, description: str, wanted: Decimal, features: frozenset[str] = frozenset()) -> None:
        """A credit line, never more than what is left (of `features`' usage, when given)."""
        amount = min(money(wanted), self.running)
        if amount <= 0:
            return
        self.charge(kind, description, -amount)
        pool = [f for f in self.left_by_feature if not features or f in features]
        base = sum((self.left_by_feature[f] for f in pool), ZERO)
        if base > 0:
            keep = max(base - amount, ZERO) / base
            for feature in pool:
                self.left_by_feature[feature] *= keep

    def left_of(self, features: frozenset[str]) -> Decimal:
        left = sum((self.left_by_feature.get(f, ZERO) for f in features), ZERO)
        return min(left.quantize(MONEY, rounding=ROUND_DOWN), self.running)


def build(
    *,
    usage: Sequence[UsageGroup],
    plan: PlanTerms,
    coupons: Sequence[Coupon] = (),
    carried_balance: Decimal = ZERO,
    adjustments: Sequence[Adjustment] = (),
    tax: Tax = NO_TAX,
    credits_available: Decimal = ZERO,
) -> Built:
    """The statement of a month, the steps of the money flow in order (the module docstring).
    `credits_available`: the workspace's prepaid credit balance usable now (≥ 0)."""
    statement = _Statement()
    _usage(statement, usage, plan)  # 1
    _volume_discount(statement, plan)  # 2
    _savings_discount(statement, plan)  # 3
    _coupons(statement, coupons)  # 4
    _free_tier(statement, plan)  # 5
    _commitment_shortfall(statement, plan)  # 6
    _fixed_fees(statement, plan)  # 7
    credits = _credits(statement, credits_available)  # 8
    taxed = _tax(statement, tax)  # 9
    _carried_balance(statement, carried_balance)  # 10
    unapplied = _adjustments(statement, adjustments)  # 11
    return _amount_due(statement, unapplied, taxed, tax, credits)


def _usage(statement: _Statement, usage: Sequence[UsageGroup], plan: PlanTerms) -> None:
    ordered = sorted(
        usage,
        key=lambda g: (g.late_for is not None, g.late_for or date.min, g.feature, g.model, g.steps,
                       g.width, g.height, g.composition_control, g.spot, g.list_unit_price),
    )  # fmt: skip
    for group in ordered:
        if group.quantity <= 0:
            continue
        unit = unit_price_for(group, plan)
        amount = money(unit * group.quantity)
        statement.charge("late_usage" if group.late_for else "usage", _describe(group), amount, group.quantity, unit)
        statement.left_by_feature[group.feature] = statement.left_by_feature.get(group.feature, ZERO) + amount


def _volume_discount(statement: _Statement, plan: PlanTerms) -> None:
    wanted = volume_discount(statement.running, plan.volume_tiers, plan.volume_mode)
    statement.credit("volume_discount", f"Volume discount ({plan.volume_mode.replace('_', ' ')})", wanted)


def _savings_discount(statement: _Statement, plan: PlanTerms) -> None:
    if plan.savings_discount_percent:
        statement.credit(
            "savings_discount", f"Savings plan: {plan.savings_discount_percent.normalize():f}% off",
            percent_of(statement.running, plan.savings_discount_percent),
        )  # fmt: skip


def _coupons(statement: _Statement, coupons: Sequence[Coupon]) -> None:
    for coupon in coupons:
        if coupon.features:
            base = statement.left_of(coupon.features)
            scope = " on " + ", ".join(FEATURE_NAMES.get(f, f) for f in sorted(coupon.features))
        else:
            base, scope = statement.running, ""
        if coupon.kind == "percent":
            wanted = percent_of(base, coupon.value)
            label = f"{coupon.value.normalize():f}% off"
        elif coupon.kind == "fixed":
            wanted = min(coupon.value, base)
            label = f"${coupon.value:.2f} off"
        else:
            raise ValueError(f"Unknown coupon kind {coupon.kind!r}")
        statement.credit("coupon", f"Coupon {coupon.name}: {label}{scope}", min(wanted, base), coupon.features)
    statement.discounted_usage = statement.running


def _free_tier(statement: _Statement, plan: PlanTerms) -> None:
    statement.credit("free_tier", "Monthly free tier", plan.free_tier_credit)
    statement.after_free_tier = statement.running


def _commitment_shortfall(statement: _Statement, plan: PlanTerms) -> None:
    if plan.savings_commitment and statement.discounted_usage < plan.savings_commitment:
        shortfall = money(plan.savings_commitment - statement.discounted_usage)
        statement.charge("commitment_shortfall", f"Savings-plan commitment ${plan.savings_commitment:.2f}: shortfall", shortfall)


def _fixed_fees(statement: _Statement, plan: PlanTerms) -> None:
    if not plan.reserved_fee:
        return
    statement.charge("fixed_fee", "Reserved capacity", money(plan.reserved_fee))
    if plan.reserved_included_usage:
        included = min(money(plan.reserved_included_usage), statement.after_free_tier)
        if included > 0:
            statement.charge("fixed_fee", "Usage included with reserved capacity", -included)


def _credits(statement: _Statement, available: Decimal) -> Decimal:
    """Prepaid credits pay what the month charges so far, never more: the rest stays in the wallet."""
    amount = min(money(max(available, ZERO)), statement.running)
    if amount <= 0:
        return ZERO
    statement.charge("credits", "Prepaid credits", -amount)
    return amount


def _tax(statement: _Statement, tax: Tax) -> Decimal:
    """The month's own charges so far, taxed at the rate, in whole cents (half up)."""
    if tax.percent <= 0 or statement.running <= 0:
        return ZERO
    amount = money((statement.running * tax.percent / 100).quantize(CENT, rounding=ROUND_HALF_UP))
    if amount:
        statement.charge("tax", f"{tax.name} {tax.percent.normalize():f}%", amount, 1, amount)
    return amount


def _carried_balance(statement: _Statement, carried_balance: Decimal) -> None:
    if carried_balance:
        statement.charge("carried_balance", "Balance carried from earlier months", money(carried_balance))


def _adjustments(statement: _Statement, adjustments: Sequence[Adjustment]) -> Decimal:
    """Debits first; a credit never takes the total below zero: what it cannot take is returned."""
    unapplied = ZERO
    for adjustment in sorted(adjustments, key=lambda a: a.amount < 0):
        amount = money(adjustment.amount)
        if amount < 0:
            applied = -min(-amount, statement.running)
            unapplied += -amount + applied
            amount = applied
        if amount:
            statement.charge("adjustment", adjustment.description[:300], amount)
    return unapplied


def _amount_due(statement: _Statement, unapplied: Decimal, taxed: Decimal, tax: Tax, credits: Decimal = ZERO) -> Built:
    """The total, and what is charged: cents rounded once, or nothing below the minimum charge
    (the total is carried forward)."""
    total = money(sum((line.amount for line in statement.lines), ZERO))
    if total != statement.running or total < 0:  # every step above is built to prevent this
        raise ArithmeticError(f"Statement arithmetic broke: lines sum to {total}, running {statement.running}")
    lines = tuple(statement.lines)
    if total < MINIMUM_CHARGE:
        return Built(lines, total, 0, total, unapplied, taxed, tax, credits)
    return Built(lines, total, cents(total), ZERO, unapplied, taxed, tax, credits)

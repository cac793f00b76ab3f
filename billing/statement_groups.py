"""A statement's lines as a person reads them: usage grouped by feature and model with subtotals,
then every other line (discounts, free tier, credits, tax, carried balance, adjustments) as
itself. Pure: from StatementLine-like objects (kind, description, quantity, unit_price, amount) to
groups; no ORM here.

The group key comes from the line's description, read back with the same FEATURE_NAMES that
billing.statement._describe writes it with (`usage_key` is its inverse; a test round-trips every
feature). Why not a new column: closed statements are history and are never rewritten, so a key
stored from now on would leave every earlier statement ungrouped, while the description is on
every line ever written. What the description does not say cannot be grouped on: only image
generation names its model (other features are priced by feature), so they group by feature.
A description that names no known feature (a feature added to the price book but not to
FEATURE_NAMES) still groups by its first part, never fails.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from core.money import ZERO

from .statement import FEATURE_NAMES

USAGE_KINDS = ("usage", "late_usage")
SEPARATOR = " · "
LATE = re.compile(r"^Late usage for (?P<month>[A-Z][a-z]+ \d{4}): ")
UNITS = {"magic_prompt": ("prompt", "prompts"), "training": ("training run", "training runs")}
DEFAULT_UNIT = ("image", "images")
_FEATURES_BY_NAME = sorted(((name, feature) for feature, name in FEATURE_NAMES.items()), key=lambda p: -len(p[0]))


class LineLike(Protocol):
    kind: str
    description: str
    quantity: int
    unit_price: Decimal
    amount: Decimal


@dataclass(frozen=True)
class UsageKey:
    feature: str  # the FEATURE_NAMES key, or the description's first part when unknown
    feature_name: str  # as people read it: "Image generation"
    model: str  # "SDXL" as the line prints it; "" when the line names none
    late_for: str  # "March 2026" for late usage; "" for the month's own


@dataclass(frozen=True)
class DetailLine:
    """One line of a group, with what sets it apart from the others of its group."""

    line: LineLike
    detail: str  # "30 steps · 1024×1024 · composition control · spot"; "" when nothing more


@dataclass
class UsageGroup:
    key: UsageKey
    lines: list[DetailLine] = field(default_factory=list)
    quantity: int = 0
    amount: Decimal = ZERO  # USD, 6 dp: the exact sum of its lines' amounts

    @property
    def label(self) -> str:
        label = self.key.feature_name + (f"{SEPARATOR}{self.key.model}" if self.key.model else "")
        return f"{label} (late usage for {self.key.late_for})" if self.key.late_for else label

    @property
    def unit(self) -> str:
        one, many = UNITS.get(self.key.feature, DEFAULT_UNIT)
        return one if self.quantity == 1 else many


@dataclass(frozen=True)
class GroupedStatement:
    """Usage groups (in the order their first line comes), then every other line in its order."""

    groups: list[UsageGroup]
    other_lines: list[LineLike]

    @property
    def usage_amount(self) -> Decimal:
        return sum((g.amount for g in self.groups), ZERO)

    @property
    def line_count(self) -> int:
        return sum(len(g.lines) for g in self.groups) + len(self.other_lines)


def usage_key(description: str) -> tuple[UsageKey, str]:
    """The group of a usage line and the rest of its description (the inverse of _describe)."""
    late = LATE.match(description)
    late_for = late["month"] if late else ""
    head, *rest = description[late.end() if late else 0 :].split(SEPARATOR)
    for name, feature in _FEATURES_BY_NAME:
        if head == name or head.startswith(name + " "):
            return UsageKey(feature, name, head[len(name) :].strip(), late_for), SEPARATOR.join(rest)
    return UsageKey(head, head, "", late_for), SEPARATOR.join(rest)


def grouped(lines: Iterable[LineLike]) -> GroupedStatement:
    """Usage and late usage lines by (late month, feature, model), each group's quantity and amount
    the exact sums of its lines; the other lines as they are, in order."""
    groups: dict[UsageKey, UsageGroup] = {}
    other: list[LineLike] = []
    for line in lines:
        if line.kind not in USAGE_KINDS:
            other.append(line)
            continue
        key, detail = usage_key(line.description)
        group = groups.setdefault(key, UsageGroup(key))
        group.lines.append(DetailLine(line, detail))
        group.quantity += line.quantity
        group.amount += line.amount
    return GroupedStatement(list(groups.values()), other)

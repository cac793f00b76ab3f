"""Statement lines grouped by feature and model (billing.statement_groups): pure, no database."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from billing.statement import FEATURE_NAMES, Coupon, PlanTerms, Tax, UsageGroup, _describe, build
from billing.statement_groups import UsageKey, grouped, usage_key

D = Decimal


def usage(feature="generation", model="sdxl", steps=30, width=1024, height=1024, composition=False, spot=False,
          price="0.004", quantity=10, late_for=None) -> UsageGroup:  # fmt: skip
    return UsageGroup(feature, model, steps, width, height, composition, spot, D(price), quantity, late_for)


def test_every_description_statement_writes_reads_back_to_its_feature_and_model():
    for feature, name in FEATURE_NAMES.items():
        for spot in (False, True):
            for late_for in (None, date(2026, 3, 1)):
                for composition in (False, True):
                    group = usage(feature=feature, model="sd15-turbo", spot=spot, late_for=late_for, composition=composition)
                    key, detail = usage_key(_describe(group))
                    model = "SD15-TURBO" if feature == "generation" else ""  # only generation names its model
                    assert key == UsageKey(feature, name, model, "March 2026" if late_for else "")
                    assert ("spot" in detail.split(" · ")) is spot
                    if feature == "generation":
                        assert detail.startswith("30 steps · 1024×1024")
                        assert ("composition control" in detail) is composition


def test_a_feature_missing_from_feature_names_still_groups_by_its_name():
    key, detail = usage_key(_describe(usage(feature="inpainting", spot=True)))
    assert key == UsageKey("inpainting", "inpainting", "", "")
    assert detail == "spot"


def test_a_built_statement_groups_by_feature_and_model_with_exact_subtotals():
    built = build(
        usage=[usage(model="sdxl", steps=30, quantity=4000, price="0.0488"),
               usage(model="sdxl", steps=50, width=1024, height=1824, quantity=300, price="0.169"),
               usage(model="sdxl", steps=30, spot=True, quantity=12, price="0.0488"),
               usage(model="sd15", quantity=250, price="0.004"),
               usage(feature="upscaling", model="", quantity=3, price="0.03"),
               usage(feature="upscaling", model="", spot=True, quantity=2, price="0.03"),
               usage(model="sdxl", quantity=7, price="0.0488", late_for=date(2026, 9, 1))],
        plan=PlanTerms(spot_discount_percent=D(40)),
        coupons=[Coupon("WELCOME", "percent", D("12.5"))],
        tax=Tax("VAT", D(20)),
        carried_balance=D("0.31"),
    )  # fmt: skip
    result = grouped(built.lines)
    assert [(g.label, g.quantity, g.unit, len(g.lines)) for g in result.groups] == [
        ("Image generation · SD15", 250, "images", 1),
        ("Image generation · SDXL", 4312, "images", 3),
        ("Upscaling", 5, "images", 2),
        ("Image generation · SDXL (late usage for September 2026)", 7, "images", 1),
    ]
    assert [line.kind for line in result.other_lines] == ["coupon", "free_tier", "tax", "carried_balance"]
    # Every line is in exactly one place, and the subtotals are the lines' sums to the last digit.
    assert result.line_count == len(built.lines)
    usage_lines = [line for line in built.lines if line.kind in ("usage", "late_usage")]
    assert result.usage_amount == sum(line.amount for line in usage_lines)
    assert result.usage_amount + sum(line.amount for line in result.other_lines) == built.total
    sdxl = result.groups[1]
    assert sdxl.amount == sum(d.line.amount for d in sdxl.lines) == D("195.2") + D("50.7") + D("0.35136")
    assert [d.detail for d in sdxl.lines] == ["30 steps · 1024×1024", "30 steps · 1024×1024 · spot", "50 steps · 1024×1824"]


@given(st.lists(st.tuples(st.sampled_from(sorted(FEATURE_NAMES)), st.sampled_from(["sd15", "sdxl", "flux-dev"]),
                          st.sampled_from([20, 30, 50]), st.booleans(), st.integers(1, 100_000),
                          st.decimals(D("0.000001"), D("2"), places=6)), max_size=40))  # fmt: skip
def test_subtotals_always_sum_to_the_lines_exactly(rows):
    built = build(usage=[usage(feature=f, model=m, steps=s, spot=spot, quantity=q, price=str(p)) for f, m, s, spot, q, p in rows],
                  plan=PlanTerms(spot_discount_percent=D(15)))  # fmt: skip
    result = grouped(built.lines)
    assert result.line_count == len(built.lines)
    assert sum(g.quantity for g in result.groups) == sum(line.quantity for line in built.lines if line.kind == "usage")
    assert result.usage_amount + sum(line.amount for line in result.other_lines) == built.total
    labels = [g.label for g in result.groups]
    assert len(labels) == len(set(labels))  # one group per feature and model

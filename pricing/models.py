"""The versioned price book: data, not code. Each version is in force from `effective_from` until the
next one; an event is priced by the version in force when it occurred and keeps that price
(pricing.rules prices, pricing.selectors reads the versions)."""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import models

from .rules import FEATURES, GENERATION, MODELS, PRICING_MODELS


class PriceBook(models.Model):
    """One version of the price list, in force from `effective_from` until the next version.

    Events keep the price they were given: a new version prices new events only. A version
    that has priced events is read-only in the admin; publish a new version instead.
    """

    version = models.PositiveIntegerField(unique=True)
    effective_from = models.DateTimeField(unique=True, help_text="UTC instant this version starts")
    composition_multiplier = models.DecimalField(
        max_digits=8, decimal_places=4, default=Decimal("1.2")
    )
    unit_rounding = models.DecimalField(
        max_digits=10,
        decimal_places=6,
        default=Decimal("0.001"),
        help_text="Generation unit prices round half-up to this (USD).",
    )
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Bumped by every edit of the version or its rates: processes reload their cached price
    # books when the newest stamp changes (pricing.selectors.price_book_history).
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "billing_pricebook"  # created by billing, which held it until issue 11
        ordering = ["-effective_from"]

    def __str__(self) -> str:
        return f"Price book v{self.version} (from {self.effective_from:%Y-%m-%d %H:%M} UTC)"

    def clean(self) -> None:
        if self.unit_rounding is not None and self.unit_rounding <= 0:
            raise ValidationError({"unit_rounding": "Must be positive, e.g. 0.001."})
        if self.composition_multiplier is not None and self.composition_multiplier <= 0:
            raise ValidationError({"composition_multiplier": "Must be positive, e.g. 1.2."})


class PriceBookRate(models.Model):
    FEATURE_CHOICES = [(feature, feature.replace("_", " ").title()) for feature in FEATURES]
    MODEL_CHOICES = [("", "any model")] + [(model, model) for model in MODELS]
    PRICING_MODEL_CHOICES = [
        ("flat", "Flat per unit"),
        ("steps_pixels", "By steps and resolution"),
    ]

    price_book = models.ForeignKey(PriceBook, on_delete=models.CASCADE, related_name="rates")
    feature = models.CharField(max_length=32, choices=FEATURE_CHOICES)
    model = models.CharField(max_length=16, choices=MODEL_CHOICES, blank=True, default="")
    pricing_model = models.CharField(max_length=32, choices=PRICING_MODEL_CHOICES, default="flat")
    unit_price = models.DecimalField(max_digits=12, decimal_places=6, help_text="USD per unit")
    reference_steps = models.PositiveIntegerField(null=True, blank=True)
    reference_pixels = models.PositiveIntegerField(
        null=True, blank=True, help_text="width × height at which unit_price applies"
    )

    class Meta:
        db_table = "billing_pricebookrate"
        ordering = ["feature", "model"]
        constraints = [
            models.UniqueConstraint(
                fields=["price_book", "feature", "model"], name="pricebookrate_unique_line"
            )
        ]

    def __str__(self) -> str:
        return f"{self.feature}{'/' + self.model if self.model else ''}: {self.unit_price}"

    def clean(self) -> None:
        errors = {}
        if self.pricing_model not in PRICING_MODELS:
            errors["pricing_model"] = f"Choose one of {', '.join(PRICING_MODELS)}."
        if self.pricing_model == "steps_pixels" and not (self.reference_steps and self.reference_pixels):
            errors["reference_steps"] = "By-steps-and-resolution prices need reference steps and pixels."
        if self.feature == GENERATION and not self.model:
            errors["model"] = "Generation is priced per model."
        if self.unit_price is not None and self.unit_price < 0:
            errors["unit_price"] = "Must not be negative."
        if errors:
            raise ValidationError(errors)

"""Price book version 1: the public pricing page (its tables: docs/pricing.md).

Warning: events priced with version 1 keep their prices; change prices by adding a version.
"""

from datetime import datetime, timezone
from decimal import Decimal

from django.db import migrations

EFFECTIVE_FROM = datetime(2024, 1, 1, tzinfo=timezone.utc)
RATES = [
    # feature, model, pricing model, unit price (USD), reference steps, reference pixels
    ("generation", "sd15", "steps_pixels", "0.004", 30, 512 * 512),
    ("generation", "sdxl", "steps_pixels", "0.032", 30, 1024 * 1024),
    ("background_removal", "", "flat", "0.100", None, None),
    ("detection", "", "flat", "0.030", None, None),
    ("upscaling", "", "flat", "0.030", None, None),
    ("captioning", "", "flat", "0.015", None, None),
    ("magic_prompt", "", "flat", "0.015", None, None),
    ("pixelate", "", "flat", "0.015", None, None),
    ("training", "", "flat", "5.00", None, None),
]


def load(apps, schema_editor, app_label="billing"):
    """Also called by the tests, with app_label "pricing" (where the models live since issue 11)."""
    PriceBook = apps.get_model(app_label, "PriceBook")
    PriceBookRate = apps.get_model(app_label, "PriceBookRate")
    book, created = PriceBook.objects.get_or_create(
        version=1,
        defaults={
            "effective_from": EFFECTIVE_FROM,
            "composition_multiplier": Decimal("1.2"),
            "unit_rounding": Decimal("0.001"),
            "notes": "The public pricing page (seed).",
        },
    )
    if created:
        PriceBookRate.objects.bulk_create(
            PriceBookRate(
                price_book=book,
                feature=feature,
                model=model,
                pricing_model=pricing_model,
                unit_price=Decimal(price),
                reference_steps=steps,
                reference_pixels=pixels,
            )
            for feature, model, pricing_model, price, steps, pixels in RATES
        )


def unload(apps, schema_editor):
    apps.get_model("billing", "PriceBook").objects.filter(version=1).delete()


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]
    operations = [migrations.RunPython(load, unload)]

from decimal import Decimal

from django.db import migrations


def load(apps, schema_editor):
    Plan = apps.get_model("billing", "Plan")
    if not Plan.objects.filter(is_default=True).exists():
        Plan.objects.get_or_create(
            name="Pay as you go", defaults={"is_default": True, "free_tier_credit": Decimal("0.50")}
        )


class Migration(migrations.Migration):
    dependencies = [("billing", "0003_plans_statements_stripe")]
    operations = [migrations.RunPython(load, migrations.RunPython.noop)]

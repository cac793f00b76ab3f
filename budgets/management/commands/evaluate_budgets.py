"""`python manage.py evaluate_budgets [--workspace SLUG]`: evaluate budgets once, now."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from budgets.evaluation import workspace_evaluate
from budgets.selectors import workspaces_to_evaluate
from core.periods import current_period
from workspaces.models import Workspace


class Command(BaseCommand):
    help = (
        "Evaluate budgets and free allowances now (what beat does every minute, but in this process) "
        "and record new alerts; their deliveries are queued for the Celery worker."
    )

    def add_arguments(self, parser):
        parser.add_argument("--workspace", metavar="SLUG", help="only this workspace (default: every one that may need it)")

    def handle(self, *args, workspace: str | None = None, **options):
        now = timezone.now()
        if workspace:
            found = Workspace.objects.filter(slug=workspace).values_list("pk", flat=True).first()
            if found is None:
                raise CommandError(f"No workspace {workspace!r}.")
            ids = [found]
        else:
            ids = workspaces_to_evaluate(current_period(now))
        recorded = 0
        for workspace_id in ids:
            report = workspace_evaluate(workspace_id, now=now)
            for alert in report.recorded:
                self.stdout.write(
                    f"workspace {workspace_id}: {alert.kind} alert"
                    + (f" at {alert.threshold}%" if alert.threshold else "")
                    + f" (spend {alert.spend:.2f} USD)"
                )
            recorded += len(report.recorded)
        self.stdout.write(
            self.style.SUCCESS(f"{len(ids)} workspace(s) evaluated, {recorded} new alert(s) recorded and queued.")
        )

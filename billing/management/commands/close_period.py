import sys
import time

from django.core.management.base import BaseCommand, CommandError

from billing.errors import CloseRefused
from billing.month_end import period_close_and_charge
from core.periods import parse_period
from workspaces.models import Workspace


class Command(BaseCommand):
    help = (
        "Close a UTC calendar month: finalize one statement per workspace with something to bill, "
        "then charge what is due through Stripe. Idempotent and resumable: run it again after a "
        "crash and it finishes what is missing, never billing or charging twice."
    )

    def add_arguments(self, parser):
        parser.add_argument("period", help="YYYY-MM")
        parser.add_argument("--workspace", metavar="SLUG", help="Only this workspace")
        parser.add_argument("--no-charge", action="store_true", help="Finalize statements, charge nothing")

    def handle(self, period: str, workspace: str | None, no_charge: bool, **options):
        try:
            month = parse_period(period)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        only = None
        if workspace:
            only = Workspace.objects.filter(slug=workspace).first()
            if only is None:
                raise CommandError(f"No workspace '{workspace}'.")
        started = time.monotonic()

        def progress(done: int, total: int) -> None:
            rate = done / max(time.monotonic() - started, 1e-9)
            sys.stderr.write(f"\r  closing {month:%Y-%m}: {done:,}/{total:,} workspaces ({rate:,.0f}/s)")
            sys.stderr.flush()

        try:
            done = period_close_and_charge(
                month, only=only, progress=progress, charge=not no_charge, notify=False  # a person sees the error
            )
        except CloseRefused as exc:
            raise CommandError(str(exc)) from exc
        report = done.closed
        sys.stderr.write("\n")
        self.stdout.write(
            f"Closed {month:%Y-%m}: {report.created} statements finalized, {report.already_closed} already "
            f"closed, {report.empty} with nothing to bill ({time.monotonic() - started:.1f}s)."
        )
        if report.caught_up:
            months = ", ".join(f"{month:%Y-%m} ({n})" for month, n in sorted(report.caught_up.items()))
            self.stdout.write(f"It first closed the earlier months still open: {months}.")
        if report.later_closed:
            self.stdout.write(
                f"{report.later_closed} workspaces already have a later month closed: their {month:%Y-%m} "
                "events are billed there, or on their next statement, as late usage."
            )
        if done.charged is not None:
            self.stdout.write(done.charged.summary())

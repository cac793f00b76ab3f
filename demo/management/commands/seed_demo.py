"""manage.py seed_demo: create (or top up) the demo workspace, as steps: its accounts, its usage
through ingestion, its past months' statements, its budget, then the keys and logins to use."""

from __future__ import annotations

import time
from datetime import date, datetime

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from billing.models import Statement
from billing.stripe_api import PaymentsUnavailable
from demo.accounts import (
    DEFAULT_PASSWORD,
    OWNER_EMAIL,
    STAFF_EMAIL,
    VIEWER_EMAIL,
    DemoAccounts,
    demo_accounts_ensure,
)
from demo.payments import (
    demo_card_ensure,
    demo_customer_ensure,
    demo_payments_enabled,
    demo_payments_skipped_reason,
)
from demo.seed import (
    DemoSeedError,
    SeedReport,
    WeekProgress,
    demo_billing_profile_ensure,
    demo_budget_ensure,
    demo_history_close,
    demo_usage_seed,
)
from demo.traffic import demo_start
from workspaces.models import Workspace


class Command(BaseCommand):
    help = (
        "Create (or top up) the demo workspace: its logins, two API keys and three months of usage "
        "over every feature, sent through the real ingestion as it would have arrived (each event "
        "minutes after it occurred), and its past months closed when the scheduler closes them. "
        "Safe to re-run: events already stored come back as duplicates, closed months stay as they are."
    )

    def add_arguments(self, parser):
        parser.add_argument("--password", default=DEFAULT_PASSWORD, help="For every demo login")
        parser.add_argument("--url", default="http://127.0.0.1:8000/", help="Where the app is served")
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            help="Seed only the last N UTC days (default: from the 1st of the month two months ago)",
        )
        parser.add_argument("--scale", type=float, default=1.0, help="Multiply the daily volume")
        parser.add_argument(
            "--now", default=None, help="Pretend it is this ISO 8601 instant (not in the future)"
        )

    def handle(self, password, url, days, scale, now, **options):
        now = self._now(now)
        url = self._checked(url, days, scale)
        accounts = demo_accounts_ensure(password=password)
        start = demo_start(now, days)
        self._seed_usage(accounts, start, now, scale)
        charge = demo_payments_enabled()
        demo_billing_profile_ensure(workspace=accounts.workspace)  # before the closes: their invoices show it
        try:
            if charge:
                self._prepare_payments(accounts.workspace)
            self._close_history(accounts.workspace, start, now, charge=charge)
            if charge:
                demo_card_ensure(accounts.workspace)
        except PaymentsUnavailable as exc:
            raise CommandError(f"The Stripe simulator did not answer: {exc}") from exc
        self._ensure_budget(accounts.workspace)
        self._print_keys(accounts)
        self._print_logins(url, password)

    # --- The steps ---------------------------------------------------------------------------------

    def _now(self, value: str | None) -> datetime:
        real_now = timezone.now()
        if value is None:
            return real_now
        try:
            now = datetime.fromisoformat(value)
        except ValueError:
            raise CommandError(f"--now is not an ISO 8601 instant: {value!r}") from None
        if now.tzinfo is None:
            raise CommandError("--now needs a UTC offset, e.g. 2026-11-25T12:00:00Z.")
        if now > real_now:
            raise CommandError("--now must not be in the future: the demo never seeds future usage.")
        return now.astimezone(real_now.tzinfo)

    def _checked(self, url: str, days: int | None, scale: float) -> str:
        """Refuse options out of range; the URL with its trailing slash."""
        if days is not None and days < 1:
            raise CommandError("--days must be at least 1.")
        if not 0 < scale <= 20:
            raise CommandError("--scale must be above 0 and at most 20.")
        return url if url.endswith("/") else url + "/"

    def _seed_usage(self, accounts: DemoAccounts, start: date, now: datetime, scale: float) -> None:
        workspace = accounts.workspace
        self.stdout.write(
            f"Seeding usage for workspace '{workspace.slug}' ({workspace.name}) from {start} to "
            f"{now:%Y-%m-%d %H:%M} UTC …"
        )
        began = time.monotonic()
        try:
            report = demo_usage_seed(
                accounts=accounts, now=now, start=start, scale=scale, on_week=self._print_week
            )
        except DemoSeedError as exc:
            raise CommandError(str(exc)) from exc
        self._print_usage(report, time.monotonic() - began)

    def _prepare_payments(self, workspace: Workspace) -> None:
        check = demo_customer_ensure(workspace)
        if check.recreated:
            self.stdout.write(
                self.style.WARNING(
                    "The Stripe simulator no longer knows the demo's customer (its store was deleted): "
                    f"a new one is made, {check.customer_id}."
                )
            )

    def _close_history(self, workspace: Workspace, start: date, now: datetime, *, charge: bool) -> None:
        if charge:
            self.stdout.write(
                "Statements of the months that are over, closed and charged when the scheduler closes "
                f"them (test mode: the local Stripe simulator at {settings.STRIPE_API_BASE}, no money moves):"
            )
        else:
            self.stdout.write(
                "Statements of the months that are over, closed when the scheduler closes them "
                f"(not charged: {demo_payments_skipped_reason()}):"
            )
        for month in demo_history_close(workspace=workspace, start=start, now=now, charge=charge):
            closes = f"{month.close_at:%Y-%m-%d %H:%M} UTC"
            if month.is_open:
                self.stdout.write(f"  {month.period:%Y-%m}  open until its close on {closes}")
            elif month.refused:
                self.stdout.write(self.style.WARNING(f"  {month.period:%Y-%m}  not closed: {month.refused}"))
            elif month.statement is None:
                self.stdout.write(f"  {month.period:%Y-%m}  nothing to bill")
            else:
                self.stdout.write(f"  {month.period:%Y-%m}  ${month.statement.total:>10,.2f}  {self._status(month.statement)}")

    def _ensure_budget(self, workspace: Workspace) -> None:
        budget = demo_budget_ensure(workspace=workspace)
        alerts = ", ".join(f"{threshold} %" for threshold in budget.thresholds)
        self.stdout.write(f"Monthly budget: ${budget.amount:,.2f} (alerts at {alerts}).")

    # --- What is printed ---------------------------------------------------------------------------

    def _status(self, statement: Statement) -> str:
        invoice = statement.invoices.filter(kind="invoice").first()
        closed = f"{statement.finalized_at:%Y-%m-%d %H:%M} UTC" + (f", invoice {invoice.number}" if invoice else "")
        if statement.status != Statement.Status.PAID:
            return f"{statement.get_status_display().lower()} on {closed}"
        attempts = statement.payment_attempts.count()
        retried = f", at attempt {attempts} (the first card was declined)" if attempts > 1 else ""
        return f"paid on {statement.paid_at:%Y-%m-%d %H:%M} UTC{retried}, closed on {closed}"

    def _print_week(self, week: WeekProgress) -> None:
        tally = week.tally
        self.stdout.write(
            f"  {week.first_day:%b %d} – {week.last_day:%b %d}: {tally.events:>6,} events "
            f"({tally.accepted:,} new, {tally.duplicates:,} duplicates)  ${tally.amount:,.2f}"
        )
        self.stdout.flush()

    def _print_usage(self, report: SeedReport, seconds: float) -> None:
        tally = report.tally
        self.stdout.write(
            f"Done in {seconds:.1f}s: {tally.events:,} events, {tally.accepted:,} "
            f"stored now, {tally.duplicates:,} already there (duplicates)."
        )
        if tally.conflicts:
            self.stdout.write(
                self.style.WARNING(
                    f"{tally.conflicts:,} demo event ids already hold different content (seeded with "
                    "another --scale or generator version); those stored events were left unchanged."
                )
            )
        self.stdout.write("Spend by month (list price, before the free tier and discounts):")
        for month, amount in report.spend_by_month:
            self.stdout.write(f"  {month}  ${amount:>10,.2f}")

    def _print_keys(self, accounts: DemoAccounts) -> None:
        self.stdout.write("")
        self.stdout.write("API keys:")
        for name, key in accounts.keys.items():
            scopes = " ".join(key.scopes)
            secret = accounts.new_secrets.get(name)
            if secret:
                self.stdout.write(f"  {name} ({scopes}): {secret}")
            else:
                self.stdout.write(f"  {name} ({key.display_prefix}, {scopes}): exists")
        if accounts.new_secrets:
            self.stdout.write("  Keep these secrets now: they are stored hashed and never shown again.")
        else:
            self.stdout.write(
                "  Secrets are shown only when a key is created. For a new one: "
                f"manage.py create_api_key {accounts.workspace.slug} --name NAME"
            )

    def _print_logins(self, url: str, password: str) -> None:
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS(f"Open {url}"))
        self.stdout.write(f"  Demo login (owner):  {OWNER_EMAIL} / {password}")
        self.stdout.write(f"  Viewer login:        {VIEWER_EMAIL} / {password}")
        self.stdout.write(f"  Staff login (admin): {STAFF_EMAIL} / {password}  → {url}admin/")

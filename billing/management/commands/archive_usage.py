import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from billing.retention import month_archive
from core.periods import parse_period
from usage.partitions import ArchiveRefused


class Command(BaseCommand):
    help = (
        "Archive a closed month of usage events (by arrival): export them to a gzipped CSV in "
        "USAGE_ARCHIVE_DIR (or --dir) and remove them from the database (on PostgreSQL, detach and "
        "drop the month's partition). Daily rollups, statements and event receipts stay."
    )

    def add_arguments(self, parser):
        parser.add_argument("month", help="YYYY-MM (UTC), a month whose close has run")
        parser.add_argument("--dir", type=Path, help="Where the file goes (default: USAGE_ARCHIVE_DIR)")

    def handle(self, month: str, dir: Path | None, **options):
        try:
            period = parse_period(month)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        started = time.monotonic()

        def progress(done: int, total: int) -> None:
            rate = done / max(time.monotonic() - started, 1e-9)
            self.stderr.write(f"\r  exporting {period:%Y-%m}: {done:,}/{total:,} events ({rate:,.0f}/s)", ending="")
            self.stderr.flush()

        try:
            record = month_archive(period, directory=dir, progress=progress)
        except ArchiveRefused as exc:
            raise CommandError(str(exc)) from exc
        self.stderr.write("")
        self.stdout.write(
            f"Archived {record.rows:,} events of {period:%Y-%m} to {record.path} (sha256 {record.sha256}) "
            f"in {time.monotonic() - started:.1f} s; their rollups and statements stay."
        )

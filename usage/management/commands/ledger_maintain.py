from django.core.management.base import BaseCommand

from usage import partitions, receipts


class Command(BaseCommand):
    help = (
        "Make the events table's monthly partitions ahead (the current month and two more, and any "
        "month whose rows sit in the DEFAULT partition) and delete event receipts older than "
        "EVENT_RECEIPT_DAYS. Beat runs it daily; safe to run at any time, on several nodes."
    )

    def handle(self, **options):
        made = partitions.ensure()
        pruned = receipts.prune()
        made_text = ", ".join(f"{month:%Y-%m}" for month in made) or "none needed"
        self.stdout.write(f"Partitions made: {made_text}. Event receipts deleted: {pruned:,}.")

"""The usage ledger's upkeep: partitions made ahead, event receipts past their window deleted."""

from __future__ import annotations

from celery import shared_task

from . import partitions, receipts


@shared_task(acks_late=True)
def ledger_maintain() -> dict:
    """Idempotent and safe on several beats at once (an advisory lock serialises partition changes;
    a receipt is deleted once whoever deletes it)."""
    made = partitions.ensure()
    pruned = receipts.prune()
    return {"partitions_made": [f"{month:%Y-%m}" for month in made], "receipts_pruned": pruned}

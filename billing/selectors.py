"""Reads for billing: price books as pure snapshots."""

from __future__ import annotations

import threading

from django.db import connection

from .models import PriceBook
from .pricing import PriceBookHistory, PriceBookSnapshot, Rate

_cache_lock = threading.Lock()
_cached: tuple[tuple, PriceBookHistory] | None = None


def _snapshot(book: PriceBook) -> PriceBookSnapshot:
    return PriceBookSnapshot(
        id=book.pk,
        version=book.version,
        effective_from=book.effective_from,
        composition_multiplier=book.composition_multiplier,
        unit_quantum=book.unit_rounding,
        rates={
            (rate.feature, rate.model): Rate(
                feature=rate.feature,
                model=rate.model,
                pricing_model=rate.pricing_model,
                unit_price=rate.unit_price,
                reference_steps=rate.reference_steps,
                reference_pixels=rate.reference_pixels,
            )
            for rate in book.rates.all()
        },
    )


def price_book_history() -> PriceBookHistory:
    """Every price-book version, cached per process and reloaded when any version changes.

    Costs one aggregate query per call; the versions and rates load only when the stamp moves.
    """
    global _cached
    with connection.cursor() as cursor:  # hand-written: this runs on every ingestion request
        cursor.execute(f"SELECT COUNT(*), MAX(updated_at) FROM {PriceBook._meta.db_table}")
        stamp = tuple(cursor.fetchone())
    cached = _cached
    if cached is not None and cached[0] == stamp:
        return cached[1]
    with _cache_lock:
        history = PriceBookHistory(
            _snapshot(book) for book in PriceBook.objects.prefetch_related("rates")
        )
        _cached = (stamp, history)
    return history

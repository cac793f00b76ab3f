"""Reads for billing: price books as pure snapshots."""

from __future__ import annotations

import threading
import time

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


# How long a process trusts its cached price books before asking the database whether any
# version changed. Saves a query on every ingestion request; a version published or edited in
# another process is seen within this time (saves in this process are seen at once). Publish new
# versions ahead of their effective_from, as the admin encourages.
FRESHNESS_SECONDS = 1.0
_checked_at = 0.0


def price_book_cache_clear(**_kwargs) -> None:
    """Forget the cached price books (connected to every save and delete of a version or rate)."""
    global _cached
    _cached = None


def price_book_history() -> PriceBookHistory:
    """Every price-book version, cached per process and reloaded when any version changes.

    At most one aggregate query per FRESHNESS_SECONDS; versions and rates load only when it moves.
    """
    global _cached, _checked_at
    cached = _cached
    now = time.monotonic()
    if cached is not None and now - _checked_at < FRESHNESS_SECONDS:
        return cached[1]
    with connection.cursor() as cursor:  # hand-written: this runs on ingestion requests
        cursor.execute(f"SELECT COUNT(*), MAX(updated_at) FROM {PriceBook._meta.db_table}")
        stamp = tuple(cursor.fetchone())
    _checked_at = now
    if cached is not None and cached[0] == stamp:
        return cached[1]
    with _cache_lock:
        history = PriceBookHistory(
            _snapshot(book) for book in PriceBook.objects.prefetch_related("rates")
        )
        _cached = (stamp, history)
    return history

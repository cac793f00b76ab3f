"""Writes to the usage ledger: `events_ingest`, the only way events enter Meterboard (what to store;
usage.storage stores it)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import OperationalError, connection, transaction
from django.utils import timezone

from core import metrics
from core.errors import ServiceError
from pricing.rules import (
    FEATURES,
    Price,
    PriceBookHistory,
    PriceBookSnapshot,
    PricingError,
    UsageItem,
    price_item,
)
from pricing.selectors import price_book_history
from workspaces.models import ApiKey, Workspace

from . import recording, storage
from .models import EventReceipt
from .storage import INSERT_CHUNK, Priced
from .validation import Errors, ParsedEvent, echoable_event_id, parse_event

logger = logging.getLogger(__name__)

MAX_BATCH = 1_000
ACCEPTED, DUPLICATE, CONFLICT, REJECTED = "accepted", "duplicate", "conflict", "rejected"
_DEADLOCK_RETRIES = 5


@dataclass(slots=True)  # a batch makes 1,000: slots make each smaller and quicker to build
class EventResult:
    index: int
    event_id: str | None  # as sent, when it can be repeated (validation.echoable_event_id)
    status: str
    amount: Decimal | None = None
    errors: Errors = field(default_factory=dict)


@dataclass
class IngestResult:
    results: list[EventResult]

    def count(self, status: str) -> int:
        return sum(1 for result in self.results if result.status == status)


class EventInvalid(ServiceError):
    """The event is not valid: `errors` has the message(s) of each field."""


def quote_event(raw: Any, *, now: datetime | None = None) -> Price:
    """Price an event body without storing it (`event_id` optional, `occurred_at` default now).
    Raises EventInvalid with per-field errors."""
    now = now or timezone.now()
    event, errors = parse_event(raw, now=now, require_event_id=False)
    book = None
    if event is not None:
        book, errors = _book_for(event, price_book_history())
    price = None
    if book is not None:
        price, errors = _price(event, book)
    if price is None:
        raise EventInvalid(errors=errors)
    return price


def _book_for(event: ParsedEvent, history: PriceBookHistory) -> tuple[PriceBookSnapshot | None, Errors]:
    book = history.at(event.occurred_at)
    if book is None:
        first = history.books[0].effective_from.isoformat() if history.books else "never"
        return None, {"occurred_at": [f"Is before the first price book (in force from {first})."]}
    return book, {}


def _price(event: ParsedEvent, book: PriceBookSnapshot) -> tuple[Price | None, Errors]:
    try:
        return price_item(book, event.item), {}
    except PricingError as exc:
        return None, {"feature": [str(exc)]}


def events_ingest(
    *, workspace: Workspace, api_key: ApiKey, raw_events: Sequence[Any], now: datetime | None = None
) -> IngestResult:
    """Validate, price and store a batch of events, each exactly once.

    Promises: every valid event is stored (even when others in the batch are rejected) or
    reported a duplicate/conflict of one already stored; the daily rollups move in the same
    transaction as the events they sum; an `event_id` seen before, in this batch or earlier, or
    in a concurrent request, is never stored or counted twice (the unique index decides).
    """
    now = now or timezone.now()
    history = price_book_history()
    prices: dict[tuple[int, UsageItem], tuple[Price | None, Errors]] = {}  # pricing is pure: memoise per batch
    results: list[EventResult | None] = [None] * len(raw_events)
    first_by_id: dict[str, Priced] = {}
    batch_repeats: list[Priced] = []
    features: list[str] = [metrics.UNKNOWN_FEATURE] * len(raw_events)  # for the metrics, by index
    for index, raw in enumerate(raw_events):
        event, errors = parse_event(raw, now=now)
        book = price = None
        if event is not None:
            book, errors = _book_for(event, history)
        if book is not None:
            memo_key = (book.version, event.item)
            priced_item = prices.get(memo_key)  # one lookup: hashing an item is not free
            if priced_item is None:
                priced_item = prices[memo_key] = _price(event, book)
            price, errors = priced_item
        if event is None or book is None or price is None:
            event_id = echoable_event_id(raw.get("event_id")) if isinstance(raw, dict) else None
            results[index] = EventResult(index, event_id, REJECTED, errors=errors)
            if isinstance(raw, dict) and raw.get("feature") in FEATURES:
                features[index] = raw["feature"]
            continue
        features[index] = event.item.feature
        priced = Priced(index, event, price, book.id, event.content_hash)
        if event.event_id in first_by_id:
            batch_repeats.append(priced)
        else:
            first_by_id[event.event_id] = priced

    # Budgets: the batch's new spend goes to the hard-limit counters and triggers an evaluation
    # of the alerts, once per request, after the commit (budgets.spend, installed in usage.recording).
    with recording.spend_recording(workspace.pk, api_key.pk) as spend:
        stored = _store_with_retry(workspace, api_key, list(first_by_id.values()), now, spend)
        add_spend = spend.add
        for priced in first_by_id.values():
            event = priced.event
            if stored[event.event_id][2]:  # inserted now, and the batch's first: accepted (_outcome)
                amount = priced.price.amount
                results[priced.index] = EventResult(priced.index, event.event_id, ACCEPTED, amount)
                add_spend(event.occurred_at, amount)
            else:
                results[priced.index] = _outcome(priced, stored, first_in_batch=True)
    for priced in batch_repeats:
        results[priced.index] = _outcome(priced, stored, first_in_batch=False)
    done = [result for result in results if result is not None]
    metrics.events_count(Counter(zip(features, (result.status for result in done), strict=True)))
    return IngestResult(results=done)


def _outcome(
    priced: Priced, stored: dict[str, tuple[str, Decimal, bool]], *, first_in_batch: bool
) -> EventResult:
    event_id = priced.event.event_id
    content_hash, amount, inserted_now = stored[event_id]
    if inserted_now and first_in_batch:
        return EventResult(priced.index, event_id, ACCEPTED, amount=amount)
    if content_hash == priced.content_hash:
        return EventResult(priced.index, event_id, DUPLICATE, amount=amount)
    return EventResult(
        priced.index,
        event_id,
        CONFLICT,
        errors={
            "event_id": [
                "Already used for an event with different content; send a new event_id for a "
                "new event (the stored event is unchanged)."
            ]
        },
    )


def _store_with_retry(
    workspace: Workspace, api_key: ApiKey, batch: list[Priced], now: datetime, spend: recording.SpendRecorder
) -> dict[str, tuple[str, Decimal, bool]]:
    # On PostgreSQL events and rollups go in one statement, atomic by itself: no BEGIN/COMMIT
    # round trips. Elsewhere, two statements in one transaction.
    one_statement = connection.vendor == "postgresql"
    for attempt in range(1, _DEADLOCK_RETRIES + 1):
        try:
            with nullcontext() if one_statement else transaction.atomic():
                return _store(workspace, api_key, batch, now, spend, one_statement=one_statement)
        except OperationalError as exc:
            # Rows are written in event_id and key order so that concurrent batches queue rather
            # than deadlock; should the database still pick a victim, redo the whole batch.
            if "deadlock" not in str(exc).lower() or attempt == _DEADLOCK_RETRIES:
                raise
            logger.warning("ingest deadlock for %s, retry %d", workspace.slug, attempt)
            time.sleep(0.01 * attempt)
    raise AssertionError("unreachable")


def _store(
    workspace: Workspace,
    api_key: ApiKey,
    batch: list[Priced],
    now: datetime,
    spend: recording.SpendRecorder,
    *,
    one_statement: bool,
) -> dict[str, tuple[str, Decimal, bool]]:
    """Insert what is new, read back what was there. Returns event_id → (hash, amount, new?)."""
    batch = sorted(batch, key=lambda priced: priced.event.event_id)
    inserted: set[str] = set()
    if one_statement:
        inserted = storage.insert_events_and_rollups(workspace, api_key, batch, now, spend)
    else:
        for start in range(0, len(batch), INSERT_CHUNK):
            inserted.update(storage.insert_events(workspace, api_key, batch[start : start + INSERT_CHUNK], now))
        storage.add_to_rollups(workspace, api_key, [p for p in batch if p.event.event_id in inserted])
    # What was already there: receipts never change, so this read needs no transaction.
    stored: dict[str, tuple[str, Decimal, bool]] = {
        priced.event.event_id: (priced.content_hash, priced.price.amount, True)
        for priced in batch
        if priced.event.event_id in inserted
    }
    existing_ids = [priced.event.event_id for priced in batch if priced.event.event_id not in inserted]
    for start in range(0, len(existing_ids), INSERT_CHUNK):
        rows = EventReceipt.objects.filter(
            workspace=workspace, event_id__in=existing_ids[start : start + INSERT_CHUNK]
        ).values_list("event_id", "content_hash", "amount")
        for event_id, content_hash, amount in rows:
            stored[event_id] = (content_hash, amount, False)
    return stored

"""An event's content hash never changes for the same content: events stored long ago are told
apart from retries (duplicate) and changes (conflict) by it, so a faster way of computing it must
write exactly the text it always hashed (issue 12 changed how the metadata is encoded)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

import pytest

from pricing.rules import UsageItem
from usage.validation import ParsedEvent


def hashed_as_before(event: ParsedEvent) -> str:
    item = event.item
    canonical = "|".join((
        event.occurred_at.isoformat(), item.feature, item.model, str(item.steps), str(item.width),
        str(item.height), "1" if item.composition_control else "0", "1" if event.spot else "0",
        str(item.quantity), json.dumps(event.metadata, sort_keys=True, separators=(",", ":")),
    ))  # fmt: skip
    return hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.parametrize("metadata", [{}, {"b": 1, "a": ["é", None, True, 1.5]}, {"z": {"y": "\u2028", "x": []}}])
def test_the_hash_is_the_one_stored_events_carry(metadata):
    event = ParsedEvent(
        event_id="e-1", occurred_at=datetime(2026, 11, 29, 10, tzinfo=timezone.utc),
        item=UsageItem(feature="generation", quantity=2, model="sdxl", steps=50, width=1024, height=1824,
                       composition_control=True),
        spot=False, metadata=metadata,
    )  # fmt: skip
    assert event.content_hash == hashed_as_before(event)

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


NOW = datetime(2026, 11, 30, 12, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "occurred_at",
    [
        "2026-11-29T10:00:00Z",  # the usual form, written by slicing (usage.validation._iso_text)
        "2026-11-29T10:00:00+00:00",
        "2026-11-29T11:00:00+01:00",
        "2026-11-29T10:00:00.250Z",
        "2026-11-29 10:00:00Z",
        "20261129T100000Z",
        "2026-W48-7T10:00:00Z",  # a week date of the same length as the usual form
        "2026-W48-7T100000.1Z",
        "0001-01-01T00:00:00Z",
    ],
)
@pytest.mark.parametrize("metadata", [None, {}, {"b": 1, "a": ["é", None, True, 1.5, -0.0]}, {"z": {"y": "\u2028\"\\"}}])
def test_a_parsed_event_hashes_and_stores_the_text_it_always_did(occurred_at, metadata):
    """parse_event's quicker paths (the instant's text by slicing, the metadata's one C encoder)
    write what isoformat() and json.dumps wrote."""
    from usage.validation import parse_event

    raw = {"event_id": "e-1", "occurred_at": occurred_at, "feature": "generation", "model": "sdxl", "steps": 50,
           "width": 1024, "height": 1824, "spot": True}  # fmt: skip
    if metadata is not None:
        raw["metadata"] = metadata
    event, errors = parse_event(raw, now=NOW)
    assert errors == {}
    assert event.occurred_at == datetime.fromisoformat(occurred_at).astimezone(timezone.utc)
    assert event.occurred_at_text == event.occurred_at.isoformat()
    assert event.metadata_json == json.dumps(metadata or {}, sort_keys=True, separators=(",", ":"))
    assert event.content_hash == hashed_as_before(event)


def test_array_literals_escape_each_element():
    """usage.storage._quoted escapes the joined column at once: the same literal as element by element."""
    from usage.storage import _quoted

    def one_by_one(values):
        return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"

    for values in ([], [""], ["", ""], ["a"], ['x"y\\z', "", '{"a":"\\\\\\""}', "é"], ["a\0b", "c"]):
        assert _quoted(values) == one_by_one(values), values

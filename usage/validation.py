"""Validation of one usage event as sent by the generation API. Pure: no ORM, no Django.

Hand-written rather than a DRF serializer because it runs for every event of a 1,000-event
batch; its errors have DRF's shape (`{"field": ["message"]}`). The bounds are documented in the
README (and the OpenAPI schema, usage.serializers) and checked here:
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from pricing.rules import FEATURES, GENERATION, MODELS, UsageItem

MAX_EVENT_ID_LENGTH = 128
MAX_QUANTITY = 100_000
MAX_STEPS = 1_000
MIN_SIDE, MAX_SIDE = 64, 8_192
MAX_METADATA_BYTES = 4_096
MAX_FUTURE = timedelta(minutes=5)

GENERATION_FIELDS = ("model", "steps", "width", "height", "composition_control")
_GENERATION_FIELD_SET = frozenset(GENERATION_FIELDS)
KNOWN_FIELDS = frozenset(
    ("event_id", "occurred_at", "feature", "quantity", "spot", "metadata") + GENERATION_FIELDS
)

Errors = dict[str, list[str]]

MAX_FIELD_NAME_LENGTH = 64  # unknown field names longer than this are not echoed back
_ECHO_LENGTH = 40


def is_unicode(text: str) -> bool:
    """False for a string holding a lone surrogate ("\\ud800" is valid JSON text, but not
    Unicode): it cannot be encoded as UTF-8, so neither stored on PostgreSQL nor answered."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def echo(value: Any) -> str:
    """A short, printable, ASCII-safe rendering of any JSON value for an error message."""
    text = repr(value)  # escapes control characters and lone surrogates
    return text if len(text) <= _ECHO_LENGTH else text[: _ECHO_LENGTH - 1] + "…"


def echoable_event_id(value: Any) -> str | None:
    """The event_id as the answer may repeat it: a string of at most MAX_EVENT_ID_LENGTH
    characters that is valid Unicode; anything else is answered as null (the item's index
    identifies it)."""
    if isinstance(value, str) and len(value) <= MAX_EVENT_ID_LENGTH and is_unicode(value):
        return value
    return None


# json.dumps(..., sort_keys=True, separators=...) builds an encoder per call: one, built once, writes
# the same text (the hash of events already stored must not change).
_METADATA_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def _metadata_encode_function():
    """`_METADATA_ENCODER.encode`, without its per-call set-up: JSONEncoder.encode makes a new C
    encoder (and a dict of the objects seen, against cycles) on every call, which is half of
    encoding a small metadata object. The C encoder is made once here, with the encoder's
    settings, and without the cycle check: a value parsed from JSON text has no cycles. Where the
    C encoder is missing or takes other arguments (another Python), or writes anything else for a
    sample, the encoder's own `encode` is used."""
    make = getattr(json.encoder, "c_make_encoder", None)
    encoder = _METADATA_ENCODER
    if make is None:
        return encoder.encode
    try:
        c_encode = make(
            None, encoder.default, json.encoder.encode_basestring_ascii, None, encoder.key_separator,
            encoder.item_separator, encoder.sort_keys, encoder.skipkeys, encoder.allow_nan,
        )  # fmt: skip

        def encode(value: dict) -> str:
            return "".join(c_encode(value, 0))

        sample = {"b": [1, 2.5, None, True, "é\u2028\"\\"], "a": {"z": {}, "y": []}, "\ud800": -0.0}
        if encode(sample) != encoder.encode(sample):
            return encoder.encode
    except TypeError:
        return encoder.encode
    return encode


_encode_metadata = _metadata_encode_function()


@dataclass(frozen=True)
class ParsedEvent:
    event_id: str
    occurred_at: datetime  # aware, UTC
    item: UsageItem
    spot: bool
    metadata: dict[str, Any]
    # The metadata as compact JSON with sorted keys (ASCII, "{}" when empty), written once by
    # parse_event: its size is checked on it, the content hash and the database read it.
    metadata_json: str = ""
    occurred_at_iso: str = ""  # occurred_at.isoformat(), written once by parse_event

    @property
    def content_hash(self) -> str:
        """Fingerprint of everything billable or stored, independent of key order or the
        offset the instant was written in: a retry hashes the same, a changed event does not."""
        item = self.item
        # One f-string (what "|".join of the str() of each part wrote, None as "None"): the text
        # hashed for stored events must never change.
        canonical = (
            f"{self.occurred_at_text}|{item.feature}|{item.model}|{item.steps}|{item.width}|{item.height}|"
            f"{'1' if item.composition_control else '0'}|{'1' if self.spot else '0'}|{item.quantity}|"
            f"{self.stored_metadata_json}"
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def occurred_at_text(self) -> str:
        """The instant in ISO 8601, UTC (the content hash and the database both read it)."""
        return self.occurred_at_iso or self.occurred_at.isoformat()

    @property
    def stored_metadata_json(self) -> str:
        if self.metadata_json:
            return self.metadata_json
        return _encode_metadata(self.metadata) if self.metadata else "{}"


def _whole_number(value: Any, name: str, low: int, high: int, errors: Errors) -> int | None:
    if type(value) is int and low <= value <= high:  # the usual case, first (bool is not int's type)
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        errors[name] = ["Must be a whole number."]
        return None
    if isinstance(value, float):
        if not value.is_integer():
            errors[name] = ["Must be a whole number."]
            return None
        value = int(value)
    if not low <= value <= high:
        errors[name] = [f"Must be between {low:,} and {high:,}."]
        return None
    return value


def _flag(value: Any, name: str, errors: Errors) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        errors[name] = ["Must be true or false."]
        return False
    return value


def _instant(value: Any, now: datetime, errors: Errors) -> datetime | None:
    if not isinstance(value, str) or not value:
        errors["occurred_at"] = ["Required: an ISO 8601 instant with offset, e.g. 2026-11-25T10:00:00Z."]
        return None
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        errors["occurred_at"] = [f"Not an ISO 8601 instant: {value[:40]!r}."]
        return None
    if instant.tzinfo is None or instant.utcoffset() is None:
        errors["occurred_at"] = ["Must include a UTC offset (e.g. 'Z' or '+00:00'); naive times are ambiguous."]
        return None
    try:
        # 0001-01-01T00:00:00+14:00 is a valid ISO 8601 text but an instant before year 1 in UTC.
        instant = instant.astimezone(timezone.utc)
    except OverflowError:
        errors["occurred_at"] = ["Is out of range: in UTC it falls outside the years 1 to 9999."]
        return None
    if instant > now + MAX_FUTURE:
        errors["occurred_at"] = ["Is more than 5 minutes in the future; check the sender's clock."]
        return None
    return instant


def parse_event(
    raw: Any, *, now: datetime, require_event_id: bool = True
) -> tuple[ParsedEvent | None, Errors]:
    """Check one event; return it normalised, or None with per-field errors."""
    if not isinstance(raw, dict):
        return None, {"non_field_errors": ["Each event must be a JSON object."]}
    errors: Errors = {}
    if not raw.keys() <= KNOWN_FIELDS:  # a set comparison in C; the names only when there are unknown ones
        _unknown_fields(raw, errors)
    event_id = raw.get("event_id")
    if require_event_id or event_id is not None:
        _event_id(event_id, errors)
    occurred_at = _instant(raw.get("occurred_at"), now, errors) if "occurred_at" in raw or require_event_id else now
    feature = raw.get("feature")
    if feature not in FEATURES:
        errors["feature"] = [f"Unknown feature {echo(feature)}; one of: {', '.join(FEATURES)}."]
    quantity = _whole_number(raw.get("quantity", 1), "quantity", 1, MAX_QUANTITY, errors)
    spot = raw.get("spot")
    if spot is not True:  # the usual false or absent, then anything else, checked
        spot = _flag(spot, "spot", errors)
    metadata, metadata_json = _metadata(raw.get("metadata"), errors)
    item = _generation(raw, feature, quantity, errors)
    if errors:
        return None, errors
    return ParsedEvent(
        event_id=event_id or "", occurred_at=occurred_at, item=item, spot=spot, metadata=metadata,
        metadata_json=metadata_json, occurred_at_iso=_iso_text(raw.get("occurred_at"), occurred_at),
    ), {}


# The form nearly every sender writes, 2026-11-25T10:00:00Z: its instant is in UTC to the second,
# so its isoformat() is the same text with "+00:00" for the "Z". (ASCII digits only, the date
# with dashes: fromisoformat also reads week dates and the basic format, which differ.)
_UTC_SECONDS = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


def _iso_text(sent: Any, instant: datetime) -> str:
    """`instant.isoformat()` (`instant` was read from `sent`, or is now when none was sent), by
    slicing when `sent` is already in that form: a third of the cost, for every event."""
    if type(sent) is str and _UTC_SECONDS.fullmatch(sent):
        return sent[:19] + "+00:00"
    return instant.isoformat()


def _unknown_fields(raw: dict, errors: Errors) -> None:
    unnamed = 0
    for name in sorted(set(raw) - KNOWN_FIELDS):
        if len(name) <= MAX_FIELD_NAME_LENGTH and is_unicode(name) and name != "non_field_errors":
            errors[name] = ["Unknown field; put free-form data in 'metadata'."]
        else:
            unnamed += 1
    if unnamed:
        errors["non_field_errors"] = [
            f"Unknown field(s) ({unnamed:,}) whose names are not valid Unicode or longer than "
            f"{MAX_FIELD_NAME_LENGTH} characters; put free-form data in 'metadata'."
        ]


def _event_id(event_id: Any, errors: Errors) -> None:
    if not isinstance(event_id, str) or not event_id.strip():
        errors["event_id"] = ["Required: a non-empty string (your idempotency id)."]
    elif len(event_id) > MAX_EVENT_ID_LENGTH:
        errors["event_id"] = [f"At most {MAX_EVENT_ID_LENGTH} characters."]
    elif not is_unicode(event_id):
        errors["event_id"] = ["Must be valid Unicode: it holds a lone surrogate (e.g. \\ud800)."]
    elif not event_id.isprintable():
        errors["event_id"] = ["Must not contain control characters."]


def _metadata(metadata: Any, errors: Errors) -> tuple[dict, str]:
    """The metadata and its compact JSON (sorted keys, ASCII: one encoding serves the size check,
    the content hash and the database)."""
    if metadata is None:
        return {}, "{}"
    if not isinstance(metadata, dict):
        errors["metadata"] = ["Must be a JSON object."]
        return {}, "{}"
    encoded = _encode_metadata(metadata) if metadata else "{}"
    if len(encoded) > MAX_METADATA_BYTES:  # ASCII: as many bytes as characters
        errors["metadata"] = [f"At most {MAX_METADATA_BYTES:,} bytes of JSON."]
    elif "\\u0000" in encoded:
        # PostgreSQL's jsonb cannot store NUL; refuse it here rather than fail the batch.
        errors["metadata"] = ["Must not contain NUL (\\u0000) characters."]
    elif "\\ud" in encoded and not is_unicode(json.dumps(metadata, ensure_ascii=False)):
        # A surrogate is written \\udXXX in ASCII JSON; only then can one be alone. Nor may it be
        # stored (SQLite would store it; the answer could not echo it).
        errors["metadata"] = ["Must be valid Unicode: a key or string holds a lone surrogate (e.g. \\ud800)."]
    return metadata, encoded


def _generation(raw: dict, feature: Any, quantity: int | None, errors: Errors) -> UsageItem | None:
    """The priced item: a generation's model, steps, size and composition (required for it,
    refused for anything else)."""
    model, steps, width, height, composition = "", None, None, None, False
    if feature == GENERATION:
        model = raw.get("model")
        if model not in MODELS:
            errors["model"] = [f"Required for generation: one of {', '.join(MODELS)} (got {echo(model)})."]
        # Each read once. The errors keep their order: the missing fields first, then the bad ones.
        sent = (raw.get("steps"), raw.get("width"), raw.get("height"))
        if None in sent:
            for name, value in zip(("steps", "width", "height"), sent, strict=True):
                if value is None:
                    errors[name] = ["Required for generation."]
        if sent[0] is not None:
            steps = _whole_number(sent[0], "steps", 1, MAX_STEPS, errors)
        if sent[1] is not None:
            width = _whole_number(sent[1], "width", MIN_SIDE, MAX_SIDE, errors)
        if sent[2] is not None:
            height = _whole_number(sent[2], "height", MIN_SIDE, MAX_SIDE, errors)
        composition = _flag(raw.get("composition_control"), "composition_control", errors)
    elif feature in FEATURES and not _GENERATION_FIELD_SET.isdisjoint(raw):  # usually none is sent
        for name in GENERATION_FIELDS:
            if raw.get(name) is not None:
                errors[name] = [f"Only for generation, not {feature}; put it in 'metadata'."]
    if errors:
        return None
    return UsageItem(feature=feature, quantity=quantity, model=model, steps=steps, width=width, height=height,
                     composition_control=composition)



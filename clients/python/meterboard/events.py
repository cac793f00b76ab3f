"""Typed events, one class per billable feature, and the one function that turns any event into the
body Meterboard's API takes.

What is cheap to check here is checked here, with the server's messages' shape
(`{"field": ["message"]}`): a typo or an out-of-range value fails in the caller's code, at the
line that made it, instead of coming back later as a rejected item. Rules that need the server
(the price book's first day, `event_id` uniqueness) stay with the server.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, ClassVar

from ._uuid7 import uuid7

FEATURES = ("generation", "background_removal", "detection", "upscaling", "captioning", "magic_prompt",
            "pixelate", "training")  # fmt: skip
ADD_ONS = FEATURES[1:]
MODELS = ("sd15", "sdxl")
MAX_EVENT_ID_LENGTH = 128
MAX_QUANTITY = 100_000
MAX_STEPS = 1_000
MIN_SIDE, MAX_SIDE = 64, 8_192
MAX_METADATA_BYTES = 4_096
GENERATION_FIELDS = ("model", "steps", "width", "height", "composition_control")

Errors = dict[str, list[str]]


class EventError(ValueError):
    """An event that Meterboard would reject, caught before it was queued. `errors` has the
    server's shape: `{"field": ["message", ...]}`."""

    def __init__(self, errors: Errors):
        self.errors = errors
        super().__init__("; ".join(f"{name}: {' '.join(messages)}" for name, messages in errors.items()))


def new_event_id() -> str:
    """A time-ordered id (UUIDv7): unique without coordination, so a retried batch is recognised as
    a duplicate, and sorted by creation time in the ledger."""
    return str(uuid7())


def timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with a `Z`; a naive datetime is refused (the server refuses it too)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise EventError({"occurred_at": ["Must be timezone-aware (e.g. datetime.now(timezone.utc))."]})
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True, kw_only=True)
class Event:
    """What every event has. `event_id` and `occurred_at` are filled in when the event is tracked
    (a UUIDv7 and now) unless given; give your own `event_id` when you have a natural one (a job
    id), so that reporting the same job twice bills it once."""

    feature: ClassVar[str]
    quantity: int = 1
    spot: bool = False
    metadata: Mapping[str, Any] | None = None
    event_id: str | None = None
    occurred_at: datetime | None = None

    def fields(self) -> dict[str, Any]:
        """The feature's own fields (the generation's model, steps, size)."""
        return {}

    def body(self, *, for_quote: bool = False) -> dict[str, Any]:
        return event_body(self.feature, quantity=self.quantity, spot=self.spot, metadata=self.metadata,
                          event_id=self.event_id, occurred_at=self.occurred_at, for_quote=for_quote,
                          **self.fields())  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Generation(Event):
    """An image generated: priced by model, steps and size (and ×1.2 with composition control)."""

    feature: ClassVar[str] = "generation"
    model: str
    steps: int
    width: int
    height: int
    composition_control: bool = False

    def fields(self) -> dict[str, Any]:
        return {"model": self.model, "steps": self.steps, "width": self.width, "height": self.height,
                "composition_control": self.composition_control}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class BackgroundRemoval(Event):
    feature: ClassVar[str] = "background_removal"


@dataclass(frozen=True, kw_only=True)
class Detection(Event):
    feature: ClassVar[str] = "detection"


@dataclass(frozen=True, kw_only=True)
class Upscaling(Event):
    feature: ClassVar[str] = "upscaling"


@dataclass(frozen=True, kw_only=True)
class Captioning(Event):
    feature: ClassVar[str] = "captioning"


@dataclass(frozen=True, kw_only=True)
class MagicPrompt(Event):
    feature: ClassVar[str] = "magic_prompt"


@dataclass(frozen=True, kw_only=True)
class Pixelate(Event):
    feature: ClassVar[str] = "pixelate"


@dataclass(frozen=True, kw_only=True)
class Training(Event):
    feature: ClassVar[str] = "training"


EVENT_CLASSES: dict[str, type[Event]] = {
    cls.feature: cls
    for cls in (Generation, BackgroundRemoval, Detection, Upscaling, Captioning, MagicPrompt, Pixelate, Training)
}


def event_body(
    feature: str, *, quantity: int = 1, spot: bool = False, metadata: Mapping[str, Any] | None = None,
    event_id: str | None = None, occurred_at: datetime | None = None, for_quote: bool = False, **fields: Any,
) -> dict[str, Any]:  # fmt: skip
    """The JSON body of one event, checked. `event_id` defaults to a new UUIDv7 and `occurred_at`
    to now (for a quote both stay out unless given). Raises EventError with every problem found."""
    errors: Errors = {}
    body: dict[str, Any] = {}
    if event_id is None and not for_quote:
        event_id = new_event_id()
    if event_id is not None:
        _check_event_id(event_id, errors)
        body["event_id"] = event_id
    if occurred_at is None and not for_quote:
        occurred_at = datetime.now(timezone.utc)
    if occurred_at is not None:
        try:
            body["occurred_at"] = timestamp(occurred_at) if isinstance(occurred_at, datetime) else occurred_at
        except EventError as error:
            errors.update(error.errors)
    if feature not in FEATURES:
        errors["feature"] = [f"Unknown feature {feature!r}; one of {', '.join(FEATURES)}."]
    body["feature"] = feature
    if not _is_int(quantity) or not 1 <= quantity <= MAX_QUANTITY:
        errors["quantity"] = [f"A whole number from 1 to {MAX_QUANTITY:,}."]
    body["quantity"] = quantity
    if spot:
        body["spot"] = True
    if metadata is not None:
        _check_metadata(metadata, errors)
        body["metadata"] = dict(metadata) if isinstance(metadata, Mapping) else metadata
    unknown = set(fields) - set(GENERATION_FIELDS)
    for name in sorted(unknown):
        errors[name] = ["Unknown field; put free-form data in 'metadata'."]
    if feature == "generation":
        _check_generation(fields, errors)
        body.update({name: fields[name] for name in GENERATION_FIELDS if fields.get(name) is not None})
        if not body.get("composition_control"):
            body.pop("composition_control", None)
    else:
        for name in GENERATION_FIELDS:
            if name in fields and fields[name] is not None and name not in unknown:
                errors[name] = ["Only for the generation feature."]
    if errors:
        raise EventError(errors)
    return body


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_event_id(event_id: Any, errors: Errors) -> None:
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= MAX_EVENT_ID_LENGTH:
        errors["event_id"] = [f"A string of 1 to {MAX_EVENT_ID_LENGTH} characters."]
    elif not event_id.isprintable():
        errors["event_id"] = ["Only printable characters."]


def _check_metadata(metadata: Any, errors: Errors) -> None:
    if not isinstance(metadata, Mapping):
        errors["metadata"] = ["A JSON object (a dict)."]
        return
    try:  # measured as the server measures it: compact, sorted keys, ASCII
        size = len(json.dumps(metadata, sort_keys=True, separators=(",", ":"), allow_nan=False))
    except (TypeError, ValueError) as error:
        errors["metadata"] = [f"Not JSON: {error}."]
        return
    if size > MAX_METADATA_BYTES:
        errors["metadata"] = [f"At most {MAX_METADATA_BYTES:,} bytes as compact JSON; this is {size:,}."]


def _check_generation(fields: dict[str, Any], errors: Errors) -> None:
    model = fields.get("model")
    if model is None:
        errors["model"] = ["Required for generation."]
    elif model not in MODELS:
        errors["model"] = [f"Unknown model {model!r}; one of {', '.join(MODELS)}."]
    for name, low, high in (("steps", 1, MAX_STEPS), ("width", MIN_SIDE, MAX_SIDE), ("height", MIN_SIDE, MAX_SIDE)):
        value = fields.get(name)
        if value is None:
            errors[name] = ["Required for generation."]
        elif not _is_int(value) or not low <= value <= high:
            errors[name] = [f"A whole number from {low:,} to {high:,}."]
    if not isinstance(fields.get("composition_control", False), bool):
        errors["composition_control"] = ["true or false."]


def body_of(event: Event | str, fields: dict[str, Any], *, for_quote: bool = False) -> dict[str, Any]:
    """`track(Generation(...))` and `track("generation", model=...)` alike."""
    if isinstance(event, Event):
        if fields:
            raise TypeError("Give either an Event or a feature name with its fields, not both.")
        return event.body(for_quote=for_quote)
    if isinstance(event, str):
        return event_body(event, for_quote=for_quote, **fields)
    raise TypeError(f"An Event or a feature name, not {type(event).__name__}.")

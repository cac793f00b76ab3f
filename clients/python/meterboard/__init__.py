"""Meterboard's Python client: report usage events (batched, retried, exactly once), ask about the
hard limit, and price an event. See README.md beside this package."""

__version__ = "0.1.0"

from ._core import (  # noqa: E402
    ACCEPTED,
    CONFLICT,
    DROPPED,
    DUPLICATE,
    FAILED,
    REJECTED,
    Allowance,
    MeterboardError,
    Outcome,
    Quote,
    RetryPolicy,
    Stats,
)  # fmt: skip
from .aio import AsyncMeterboard  # noqa: E402
from .client import Meterboard  # noqa: E402
from .events import (  # noqa: E402
    BackgroundRemoval,
    Captioning,
    Detection,
    Event,
    EventError,
    Generation,
    MagicPrompt,
    Pixelate,
    Training,
    Upscaling,
    event_body,
    new_event_id,
)  # fmt: skip

__all__ = [
    "ACCEPTED", "CONFLICT", "DROPPED", "DUPLICATE", "FAILED", "REJECTED", "Allowance", "AsyncMeterboard",
    "BackgroundRemoval", "Captioning", "Detection", "Event", "EventError", "Generation", "MagicPrompt",
    "Meterboard", "MeterboardError", "Outcome", "Pixelate", "Quote", "RetryPolicy", "Stats", "Training",
    "Upscaling", "event_body", "new_event_id",
]  # fmt: skip

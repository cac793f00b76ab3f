"""Realistic usage events for the benchmarks, as the generation API would send them.

The mix follows the seed pricing page: SD 1.5 and SDXL generations at the table's step counts and
sizes (sometimes portrait, sometimes off-table steps), composition control on some, the add-on
features (upscaling, background removal, captioning, ...) and a rare training, quantity 1-4.
bench/singles.lua mirrors this mix for the wrk phase; keep the two alike.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

SD15_SIZES = ((512, 512), (512, 576), (512, 640), (512, 688), (512, 704), (512, 768), (512, 912), (512, 1024))
SDXL_SIZES = (
    (1024, 1024),
    (1024, 1152),
    (1024, 1280),
    (1024, 1376),
    (1024, 1408),
    (1024, 1536),
    (1024, 1824),
    (1024, 2048),
)
TABLE_STEPS = (30, 50, 100, 150)
OFF_TABLE_STEPS = (20, 25, 40, 75)  # priced as max(steps, 30): exercises the formula, not a lookup
ADD_ONS = (
    ("upscaling", 10),
    ("background_removal", 7),
    ("captioning", 6),
    ("magic_prompt", 3),
    ("detection", 2),
    ("pixelate", 1),
)
_ADD_ON_NAMES = tuple(name for name, _ in ADD_ONS)
_ADD_ON_WEIGHTS = tuple(weight for _, weight in ADD_ONS)


def occurred_window(now: datetime) -> tuple[datetime, datetime]:
    """[start of the current UTC month, a minute ago]: past days of this month, never the future."""
    now = now.astimezone(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = now - timedelta(minutes=1)
    if end <= start:  # the first minute of a month: the month has no past yet
        end = now
    return start, end


def iso_z(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventFactory:
    """Makes events with ids `<prefix><random hex>-<n>`: unique, and unordered like real ids."""

    def __init__(self, prefix: str, *, seed: int, now: datetime | None = None):
        self.prefix = prefix
        self.rng = random.Random(seed)
        start, end = occurred_window(now or datetime.now(UTC))
        self._start = int(start.timestamp())
        self._span = max(0, int(end.timestamp()) - self._start)
        self.made = 0

    def event(self) -> dict:
        rng = self.rng
        self.made += 1
        instant = datetime.fromtimestamp(self._start + rng.randint(0, self._span), UTC)
        event: dict = {
            "event_id": f"{self.prefix}{rng.getrandbits(48):012x}-{self.made}",
            "occurred_at": iso_z(instant),
        }
        roll = rng.random()
        if roll < 0.70:
            sdxl = rng.random() < 0.45
            width, height = rng.choice(SDXL_SIZES if sdxl else SD15_SIZES)
            if rng.random() < 0.3:
                width, height = height, width  # portrait
            event.update(
                feature="generation",
                model="sdxl" if sdxl else "sd15",
                steps=rng.choice(TABLE_STEPS) if rng.random() < 0.9 else rng.choice(OFF_TABLE_STEPS),
                width=width,
                height=height,
            )
            if rng.random() < 0.15:
                event["composition_control"] = True
        elif roll < 0.998:
            event["feature"] = rng.choices(_ADD_ON_NAMES, _ADD_ON_WEIGHTS)[0]
        else:
            event["feature"] = "training"
        quantity = rng.choice((1, 1, 1, 2, 2, 3, 4))
        if quantity != 1 or rng.random() < 0.5:
            event["quantity"] = quantity
        if rng.random() < 0.05:
            event["spot"] = True
        if rng.random() < 0.6:
            event["metadata"] = {
                "request_id": f"req_{rng.getrandbits(64):016x}",
                "generator_id": f"gen-{rng.randint(1, 40)}",
            }
        return event

    def batch(self, size: int) -> list[dict]:
        return [self.event() for _ in range(size)]


def batch_body(events: list[dict]) -> bytes:
    return json.dumps({"events": events}, separators=(",", ":")).encode()

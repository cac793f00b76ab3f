"""The demo's synthetic usage: what a day of a game studio's traffic looks like, and when each event
reaches Meterboard. Pure: no database (growth_anchor only reads the workspace it is given).

Idempotency comes from determinism, not from bookkeeping: a day's events are drawn from a random
generator seeded with the date, and their `event_id`s (`demo-YYYYMMDD-NNNNN`) number them in time
order, so a day always produces the same events with the same ids. A re-run sends them again and
ingestion reports them as duplicates; only events whose time has come since the last run are new.
Warning: changing the generator (weights, volumes) changes the content behind existing ids, which a
database already seeded reports as conflicts; bump DEMO_EVENT_PREFIX when you do.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from datetime import timezone as dt_timezone
from typing import Any

from core.periods import add_months, month_start
from workspaces.models import Workspace

from .accounts import ANALYTICS, PRODUCTION

DEMO_EVENT_PREFIX = "demo"

EVENTS_PER_WEEKDAY = 215  # at the start of the demo, before growth
MONTHLY_GROWTH = 0.12  # compounding; the curve a sales team likes to show
MAX_GROWTH = 3.0  # a database kept for years does not end up seeding a million events a day
WEEKDAY_FACTOR = (1.0, 1.05, 1.08, 1.04, 0.9, 0.42, 0.36)  # Monday … Sunday
LAUNCH_DAY_CHANCE, LAUNCH_DAY_FACTOR = 0.02, 2.2  # a content drop now and then

# UTC hours, weighted for a studio in Europe: office hours plus nightly batch jobs.
HOUR_WEIGHTS = (
    0.3, 0.25, 0.25, 0.25, 0.3, 0.35, 0.55, 1.0, 1.7, 1.9, 1.9, 1.8,
    1.3, 1.8, 1.9, 1.9, 1.7, 1.3, 0.9, 0.8, 0.7, 0.55, 0.45, 0.35,
)  # fmt: skip

FEATURE_WEIGHTS = {
    "generation": 70,
    "magic_prompt": 8,
    "upscaling": 6,
    "captioning": 5,
    "background_removal": 4,
    "detection": 4,
    "pixelate": 3,
}
EVERYDAY_FEATURES = tuple(FEATURE_WEIGHTS)
TRAINING_WEEKDAY = 1  # the generators are retrained every Tuesday afternoon …
EXTRA_TRAINING_CHANCE = 0.05  # … and sometimes on another weekday
# The seed table's columns and rows; sizes are portrait there, a third of requests are landscape.
STEPS_WEIGHTS = {30: 60, 50: 27, 100: 10, 150: 3}
SIDES = {
    "sd15": (512, {512: 44, 576: 7, 640: 10, 688: 5, 704: 5, 768: 17, 912: 5, 1024: 7}),
    "sdxl": (1024, {1024: 50, 1152: 8, 1280: 10, 1376: 4, 1408: 4, 1536: 16, 1824: 5, 2048: 3}),
}
LANDSCAPE_CHANCE = 0.33
COMPOSITION_CHANCE = 0.12
SPOT_CHANCE = {"generation": 0.2, "upscaling": 0.15}
GENERATION_QUANTITY = {1: 65, 2: 20, 4: 15}
BATCH_QUANTITY = {1: 75, 4: 15, 10: 8, 25: 2}  # captioning and detection run over image sets
ANALYTICS_SHARE = {  # which key sends what: Analytics tags and inspects, production generates
    "generation": 0.08,
    "magic_prompt": 0.05,
    "upscaling": 0.15,
    "captioning": 0.7,
    "background_removal": 0.2,
    "detection": 0.75,
    "pixelate": 0.2,
    "training": 0.5,
}
PROJECTS = ("skyforge", "tiny-tactics", "neon-drift", "marketing")

# How the events reach Meterboard: each key's reporter in the generation API buffers its events and
# sends what it holds every REPORT_EVERY (on UTC-aligned ticks); a request arrives a few seconds
# later. So an event is received between TRANSIT_SECONDS[0] s and REPORT_EVERY + TRANSIT_SECONDS[1] s
# after it occurred, as with real traffic: well before its month closes on the 2nd, so it is billed
# on its own month's statement. Seeding time goes on the number of requests (about one per key and
# tick with traffic): a longer interval seeds faster but delivers later.
REPORT_EVERY = timedelta(minutes=5)
TRANSIT_SECONDS = (2, 20)


@dataclass(frozen=True)
class DemoEvent:
    key_name: str  # a DEMO_KEYS name
    occurred_at: datetime  # aware, UTC
    body: dict[str, Any]  # as the generation API would send it


def demo_start(now: datetime, days: int | None = None) -> date:
    """First UTC day to seed: the 1st of the month two months before `now`, or `days` days back
    (today included)."""
    today = now.astimezone(dt_timezone.utc).date()
    if days is not None:
        return today - timedelta(days=max(days, 1) - 1)
    return add_months(month_start(today), -2)


def growth_anchor(workspace: Workspace) -> date:
    """The day growth is measured from: the demo's first day when the workspace was created.
    Fixed for the life of the database, so a day's volume (and its events) never changes."""
    created = workspace.created_at.astimezone(dt_timezone.utc)
    return demo_start(created)


def _pick(rng: random.Random, weights: dict) -> Any:
    return rng.choices(tuple(weights), weights=tuple(weights.values()))[0]


def _events_today(day: date, anchor: date, scale: float, rng: random.Random) -> int:
    months = (day - anchor).days / 30.4
    growth = min(max((1 + MONTHLY_GROWTH) ** months, 0.5), MAX_GROWTH)
    launch = LAUNCH_DAY_FACTOR if day.weekday() < 5 and rng.random() < LAUNCH_DAY_CHANCE else 1.0
    noise = min(max(rng.gauss(1.0, 0.12), 0.7), 1.3)
    return max(round(EVENTS_PER_WEEKDAY * growth * WEEKDAY_FACTOR[day.weekday()] * launch * noise * scale), 0)


def _instant(day: date, rng: random.Random, hours: tuple[int, ...] | None = None) -> datetime:
    hour = rng.choice(hours) if hours else rng.choices(range(24), weights=HOUR_WEIGHTS)[0]
    return datetime.combine(day, time(hour), tzinfo=dt_timezone.utc) + timedelta(
        minutes=rng.randrange(60), seconds=rng.randrange(60), milliseconds=rng.randrange(1000)
    )


def _generation(body: dict[str, Any], day: date, anchor: date, rng: random.Random) -> None:
    """A generation's model, steps, size, composition control and quantity, into `body`."""
    # SDXL adoption grows month after month.
    sdxl_share = min(0.12 + 0.04 * (day - anchor).days / 30.4, 0.4)
    model = "sdxl" if rng.random() < sdxl_share else "sd15"
    short, long_sides = SIDES[model]
    width, height = short, _pick(rng, long_sides)
    if rng.random() < LANDSCAPE_CHANCE:
        width, height = height, width
    body.update(model=model, steps=_pick(rng, STEPS_WEIGHTS), width=width, height=height)
    if rng.random() < COMPOSITION_CHANCE:
        body["composition_control"] = True
    body["quantity"] = _pick(rng, GENERATION_QUANTITY)


def _body(feature: str, day: date, anchor: date, rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {"feature": feature}
    if feature == "generation":
        _generation(body, day, anchor, rng)
    elif feature in ("captioning", "detection"):
        body["quantity"] = _pick(rng, BATCH_QUANTITY)
    if rng.random() < SPOT_CHANCE.get(feature, 0.0):
        body["spot"] = True
    body["metadata"] = {"source": "seed_demo", "project": rng.choice(PROJECTS)}
    return body


def _day_drafts(
    day: date, anchor: date, scale: float, rng: random.Random
) -> list[tuple[datetime, str, dict]]:
    """The day's (instant, feature, body) in the order drawn: its traffic, every everyday feature at
    least once, and a training run on training days."""
    drafts: list[tuple[datetime, str, dict[str, Any]]] = []
    for _ in range(_events_today(day, anchor, scale, rng)):
        feature = _pick(rng, FEATURE_WEIGHTS)
        drafts.append((_instant(day, rng), feature, _body(feature, day, anchor, rng)))
    # A small day (low --scale, a quiet Sunday) still shows every everyday feature once.
    present = {feature for _, feature, _ in drafts}
    for feature in EVERYDAY_FEATURES:
        if feature not in present:
            drafts.append((_instant(day, rng), feature, _body(feature, day, anchor, rng)))
    if day.weekday() == TRAINING_WEEKDAY or (day.weekday() < 5 and rng.random() < EXTRA_TRAINING_CHANCE):
        instant = _instant(day, rng, hours=(13, 14, 15))
        drafts.append((instant, "training", _body("training", day, anchor, rng)))
    return drafts


def demo_day_events(day: date, *, anchor: date, scale: float = 1.0) -> list[DemoEvent]:
    """Every demo event of UTC day `day`, in time order, with their ids. Pure and deterministic:
    the same (day, anchor, scale) always gives the same events."""
    rng = random.Random(f"meterboard-demo:{day.isoformat()}")
    drafts = _day_drafts(day, anchor, scale, rng)
    drafts.sort(key=lambda draft: draft[0])
    events = []
    for number, (instant, feature, body) in enumerate(drafts, start=1):
        key_name = ANALYTICS if rng.random() < ANALYTICS_SHARE[feature] else PRODUCTION
        body = {
            "event_id": f"{DEMO_EVENT_PREFIX}-{day:%Y%m%d}-{number:05d}",
            "occurred_at": instant.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            **body,
        }
        events.append(DemoEvent(key_name, instant, body))
    return events


def demo_events(start: date, now: datetime, *, anchor: date, scale: float = 1.0) -> Iterator[DemoEvent]:
    """The demo's events from UTC day `start` up to `now` (never later)."""
    now = now.astimezone(dt_timezone.utc)
    day = start
    while day <= now.date():
        for event in demo_day_events(day, anchor=anchor, scale=scale):
            if event.occurred_at <= now:
                yield event
        day += timedelta(days=1)


def demo_arrival(event: DemoEvent) -> datetime:
    """When `event` is received: its key's next send after it occurred, plus the request's transit
    (deterministic). Always after `occurred_at`, by at most REPORT_EVERY + TRANSIT_SECONDS[1]."""
    step = int(REPORT_EVERY.total_seconds())
    send = (int(event.occurred_at.timestamp()) // step + 1) * step
    low, high = TRANSIT_SECONDS
    transit = low + zlib.crc32(f"{event.key_name}:{send}".encode()) % (high - low + 1)
    return datetime.fromtimestamp(send + transit, tz=dt_timezone.utc)

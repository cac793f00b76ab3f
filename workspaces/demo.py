"""The demo workspace behind `manage.py seed_demo` (and `make run`).

Builds "Pixel Forge Studio": an owner, a viewer, a staff superuser, two API keys and about three
months of usage over every feature, sent through `usage.services.events_ingest` so that prices and
rollups are exactly what real traffic would produce.

Idempotency comes from determinism, not from bookkeeping: a day's events are drawn from a random
generator seeded with the date, and their `event_id`s (`demo-YYYYMMDD-NNNNN`) number them in time
order, so a day always produces the same events with the same ids. A re-run sends them again and
ingestion reports them as duplicates; only events whose time has come since the last run are new.
Warning: changing the generator (weights, volumes) changes the content behind existing ids, which a
database already seeded reports as conflicts; bump DEMO_EVENT_PREFIX when you do.

Time: the demo is seeded as if it had been running all along. Each event is received as real
traffic is, seconds to a few minutes after it occurred (`demo_arrival`: each key's reporter sends
its buffer every REPORT_EVERY), so ingestion runs in time order with `now` = that arrival, never
later than the real clock. Each month that is over is then closed when the scheduler would have
closed it (`demo_close_at`: BILLING_CLOSE_DAY, 02:00 UTC), oldest first; a month whose close time is
still to come stays open. So the statements are exactly what the real schedule would produce, and
this month's preview holds this month's usage only.
"""

from __future__ import annotations

import random
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Max

from usage.models import UsageEvent
from usage.selectors import usage_summary
from usage.services import ACCEPTED, CONFLICT, DUPLICATE, MAX_BATCH, REJECTED, events_ingest

from .models import ALL_SCOPES, ApiKey, Membership, Scope, Workspace
from .services import api_key_create, workspace_create

DEMO_SLUG = "demo"
DEMO_NAME = "Pixel Forge Studio"
DEMO_TIMEZONE = "Europe/Paris"
OWNER_EMAIL = "demo@meterboard.local"
VIEWER_EMAIL = "viewer@meterboard.local"
STAFF_EMAIL = "staff@meterboard.local"
DEFAULT_PASSWORD = "meterboard-demo"
DEMO_EVENT_PREFIX = "demo"

PRODUCTION = "Production generators"
ANALYTICS = "Analytics"
DEMO_KEYS: dict[str, tuple[str, ...]] = {
    PRODUCTION: (Scope.USAGE_WRITE.value,),
    ANALYTICS: ALL_SCOPES,
}

# --- Accounts ------------------------------------------------------------------------------------


@dataclass
class DemoAccounts:
    workspace: Workspace
    owner: Any
    viewer: Any
    staff: Any
    keys: dict[str, ApiKey]  # by DEMO_KEYS name
    new_secrets: dict[str, str]  # only for keys created by this call: the one chance to show them


def _person(email: str, first_name: str, last_name: str, password: str, *, staff: bool = False):
    user, _ = get_user_model().objects.get_or_create(
        username=email, defaults={"email": email, "first_name": first_name, "last_name": last_name}
    )
    changed = []
    if not user.check_password(password):
        user.set_password(password)
        changed.append("password")
    if staff and not (user.is_staff and user.is_superuser):
        user.is_staff = user.is_superuser = True
        changed += ["is_staff", "is_superuser"]
    if changed:
        user.save(update_fields=changed)
    return user


@transaction.atomic
def demo_accounts_ensure(*, password: str = DEFAULT_PASSWORD) -> DemoAccounts:
    """The demo workspace, its people and its keys, created when missing.

    Promises: safe to call again (nothing is duplicated; existing keys are kept, since their
    secrets cannot be shown again); every demo login, staff included, ends with `password`.
    """
    is_new = not Workspace.objects.filter(slug=DEMO_SLUG).exists()
    workspace = workspace_create(slug=DEMO_SLUG, owner_email=OWNER_EMAIL, name=DEMO_NAME)
    if is_new:
        workspace.timezone = DEMO_TIMEZONE
        workspace.save(update_fields=["timezone"])
    owner = _person(OWNER_EMAIL, "Camille", "Martin", password)
    viewer = _person(VIEWER_EMAIL, "Léo", "Bernard", password)
    Membership.objects.get_or_create(
        workspace=workspace, user=viewer, defaults={"role": Membership.Role.VIEWER}
    )
    staff = _person(STAFF_EMAIL, "Meterboard", "Staff", password, staff=True)

    keys: dict[str, ApiKey] = {}
    new_secrets: dict[str, str] = {}
    for name, scopes in DEMO_KEYS.items():
        key = (
            ApiKey.objects.filter(workspace=workspace, name=name, revoked_at__isnull=True)
            .order_by("created_at", "pk")
            .first()
        )
        if key is None:
            issued = api_key_create(workspace=workspace, name=name, scopes=scopes)
            key, new_secrets[name] = issued.api_key, issued.secret
        keys[name] = key
    return DemoAccounts(workspace, owner, viewer, staff, keys, new_secrets)


# --- Usage: what a day of a game studio's traffic looks like ----------------------------------------

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
    year, month = divmod(today.year * 12 + today.month - 1 - 2, 12)
    return date(year, month + 1, 1)


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


def _body(feature: str, day: date, anchor: date, rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {"feature": feature}
    if feature == "generation":
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
    elif feature in ("captioning", "detection"):
        body["quantity"] = _pick(rng, BATCH_QUANTITY)
    if rng.random() < SPOT_CHANCE.get(feature, 0.0):
        body["spot"] = True
    body["metadata"] = {"source": "seed_demo", "project": rng.choice(PROJECTS)}
    return body


def demo_day_events(day: date, *, anchor: date, scale: float = 1.0) -> list[DemoEvent]:
    """Every demo event of UTC day `day`, in time order, with their ids. Pure and deterministic:
    the same (day, anchor, scale) always gives the same events."""
    rng = random.Random(f"meterboard-demo:{day.isoformat()}")
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


# --- Seeding -----------------------------------------------------------------------------------------

# How the events reach Meterboard: each key's reporter in the generation API buffers its events and
# sends what it holds every REPORT_EVERY (on UTC-aligned ticks); a request arrives a few seconds
# later. So an event is received between TRANSIT_SECONDS[0] s and REPORT_EVERY + TRANSIT_SECONDS[1] s
# after it occurred, as with real traffic: well before its month closes on the 2nd, so it is billed
# on its own month's statement. Seeding time goes on the number of requests (about one per key and
# tick with traffic): a longer interval seeds faster but delivers later.
REPORT_EVERY = timedelta(minutes=5)
TRANSIT_SECONDS = (2, 20)


def demo_arrival(event: DemoEvent) -> datetime:
    """When `event` is received: its key's next send after it occurred, plus the request's transit
    (deterministic). Always after `occurred_at`, by at most REPORT_EVERY + TRANSIT_SECONDS[1]."""
    step = int(REPORT_EVERY.total_seconds())
    send = (int(event.occurred_at.timestamp()) // step + 1) * step
    low, high = TRANSIT_SECONDS
    transit = low + zlib.crc32(f"{event.key_name}:{send}".encode()) % (high - low + 1)
    return datetime.fromtimestamp(send + transit, tz=dt_timezone.utc)


@dataclass
class SeedTally:
    events: int = 0
    accepted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    amount: Decimal = Decimal(0)  # USD, 6 dp, list price of this span's events (new or not)

    def add(self, other: SeedTally) -> None:
        self.events += other.events
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.conflicts += other.conflicts
        self.amount += other.amount


@dataclass
class WeekProgress:
    first_day: date
    last_day: date
    tally: SeedTally


@dataclass
class SeedReport:
    start: date
    end: date
    tally: SeedTally = field(default_factory=SeedTally)
    spend_by_month: list[tuple[str, Decimal]] = field(default_factory=list)  # from the rollups


class DemoSeedError(RuntimeError):
    """The generator produced an event that ingestion rejected: a bug in this module."""


def _send(accounts: DemoAccounts, key_name: str, bodies: list[dict], now: datetime, tally: SeedTally) -> None:
    for start in range(0, len(bodies), MAX_BATCH):
        outcome = events_ingest(
            workspace=accounts.workspace,
            api_key=accounts.keys[key_name],
            raw_events=bodies[start : start + MAX_BATCH],
            now=now,
        )
        for result in outcome.results:
            if result.status == REJECTED:
                raise DemoSeedError(f"Demo event {result.event_id} was rejected: {result.errors}")
            tally.events += 1
            tally.accepted += result.status == ACCEPTED
            tally.duplicates += result.status == DUPLICATE
            tally.conflicts += result.status == CONFLICT
            if result.amount is not None:
                tally.amount += result.amount


def _stored_ids(workspace: Workspace, first_day: date, last_day: date) -> set[str]:
    """The demo event ids of these days already stored (ids sort by day: one index range)."""
    after = last_day + timedelta(days=1)
    return set(
        UsageEvent.objects.filter(
            workspace=workspace,
            event_id__gte=f"{DEMO_EVENT_PREFIX}-{first_day:%Y%m%d}-",
            event_id__lt=f"{DEMO_EVENT_PREFIX}-{after:%Y%m%d}-",
        ).values_list("event_id", flat=True)
    )


def _delivery_floor(workspace: Workspace, now: datetime) -> datetime | None:
    """The workspace's latest close (up to `now`). An event not stored yet cannot have been received
    before it: that close did not see it. This matters only when the demo was not seeded for a while
    and a month was closed meanwhile (the beat of a `make run` left running over the 2nd): the events
    of that gap are then received at that close, and billed as late usage, as they would be for real."""
    from billing.models import Statement

    return Statement.objects.filter(workspace=workspace, finalized_at__lte=now).aggregate(
        latest=Max("finalized_at")
    )["latest"]


def demo_usage_seed(
    *,
    accounts: DemoAccounts,
    now: datetime,
    start: date,
    scale: float = 1.0,
    on_week: Callable[[WeekProgress], None] | None = None,
) -> SeedReport:
    """Send the demo's usage from `start` to `now` through `events_ingest`, a week at a time.

    Promises: nothing after `now`; each new event is sent in time order with `now` = its arrival
    (`demo_arrival`, capped at `now`; never before the workspace's latest close), together with the
    other events its key sends at that moment, so `received_at` is seconds to minutes after
    `occurred_at`; a re-run stores only what became due since (the events already stored are sent
    again in full batches and come back duplicates, or conflicts when their content changed)."""
    now = now.astimezone(dt_timezone.utc)
    anchor = growth_anchor(accounts.workspace)
    floor = _delivery_floor(accounts.workspace, now)
    today = now.date()
    report = SeedReport(start=start, end=today)
    first_day = start
    while first_day <= today:
        last_day = min(first_day + timedelta(days=6), today)
        week_now = min(now, datetime.combine(last_day, time.max, tzinfo=dt_timezone.utc))
        stored = _stored_ids(accounts.workspace, first_day, last_day)
        again: dict[str, list[dict]] = {name: [] for name in DEMO_KEYS}
        arriving: dict[tuple[datetime, str], list[dict]] = defaultdict(list)
        for event in demo_events(first_day, week_now, anchor=anchor, scale=scale):
            if event.body["event_id"] in stored:
                again[event.key_name].append(event.body)
                continue
            arrival = demo_arrival(event)
            if floor is not None and arrival < floor:
                arrival = floor
            arriving[(min(arrival, now), event.key_name)].append(event.body)
        tally = SeedTally()
        for key_name, bodies in again.items():
            _send(accounts, key_name, bodies, now, tally)
        # One transaction for the week's many small requests: a commit for each would make seeding
        # half as slow again (SQLite, the default three months: 10 s → 16 s).
        with transaction.atomic():
            for arrival, key_name in sorted(arriving):
                _send(accounts, key_name, arriving[(arrival, key_name)], arrival, tally)
        report.tally.add(tally)
        if on_week is not None:
            on_week(WeekProgress(first_day, last_day, tally))
        first_day = last_day + timedelta(days=1)

    summary = usage_summary(workspace=accounts.workspace, start=start, end=today, group_by=("month",))
    report.spend_by_month = [(row["month"], row["amount"]) for row in summary.rows]
    return report


# --- Statements and a budget, so that the dashboard has history to show ---------------------------

# The beat's "billing-close-previous-month" (config/schedule.py): settings.BILLING_CLOSE_DAY, 02:00 UTC.
CLOSE_HOUR = 2


def demo_close_at(period: date) -> datetime:
    """When the scheduler closes `period` (the 1st of a month): BILLING_CLOSE_DAY of the next month,
    CLOSE_HOUR:00 UTC."""
    from core.periods import next_month

    following = next_month(period)
    return datetime(
        following.year, following.month, settings.BILLING_CLOSE_DAY, CLOSE_HOUR, tzinfo=dt_timezone.utc
    )


@dataclass
class DemoMonth:
    period: date  # the 1st of the month
    close_at: datetime  # when the scheduler closes it (demo_close_at)
    statement: Any = None  # its live statement; None when there was nothing to bill, or still open
    is_open: bool = False  # its close time is still to come: this month's preview shows it as pending
    refused: str = ""  # why billing refused to close it, if it did


def demo_history_close(*, workspace: Workspace, start: date, now: datetime) -> list[DemoMonth]:
    """Close each month of the demo that is over, at the moment the scheduler would have
    (demo_close_at), oldest first, and for the demo workspace only; without charging (the demo has
    no card and usually no Stripe). A month whose close time is after `now` is left open, and a
    month already closed is returned as it is, so this is safe to re-run."""
    from billing.close import period_close
    from billing.errors import CloseRefused
    from billing.models import Statement
    from core.periods import next_month

    months = []
    period = start.replace(day=1)
    this_month = now.astimezone(dt_timezone.utc).date().replace(day=1)
    while period < this_month:
        month = DemoMonth(period, demo_close_at(period))
        if month.close_at > now:
            month.is_open = True
        else:
            try:
                period_close(period, only=workspace, now=month.close_at)
            except CloseRefused as exc:
                month.refused = str(exc)
            month.statement = (
                Statement.objects.filter(workspace=workspace, period=period)
                .exclude(status=Statement.Status.VOID)
                .first()
            )
        months.append(month)
        period = next_month(period)
    return months


DEMO_BUDGET = Decimal("400.00")  # USD a month: the demo's month-end forecast comes close to it


def demo_budget_ensure(*, workspace: Workspace):
    """A monthly workspace budget with the default thresholds and forecast alerts, when the
    workspace has none (an owner's own budgets are left alone)."""
    from budgets.models import Budget, default_thresholds
    from budgets.services import budget_create

    existing = Budget.objects.filter(workspace=workspace).order_by("pk").first()
    if existing is not None:
        return existing
    budget, _ = budget_create(workspace=workspace, amount=DEMO_BUDGET, thresholds=default_thresholds())
    return budget

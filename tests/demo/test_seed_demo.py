"""manage.py seed_demo: the demo workspace, its logins and keys, and its usage through ingestion.

The database tests seed a small slice (--days, --scale); the default three months are checked
without a database write, from the same generator, priced with the seed price book.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal
from io import StringIO

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import Sum
from django.test import Client
from django.utils import timezone

from billing.close import period_close
from billing.drafts import statement_draft
from billing.models import Statement
from core.periods import month_start, months_between, next_month, period_bounds, previous_month
from demo.accounts import DEFAULT_PASSWORD, DEMO_KEYS, DEMO_SLUG, OWNER_EMAIL
from demo.traffic import demo_events, demo_start, growth_anchor
from pricing.rules import FEATURES, price_item
from pricing.selectors import price_book_history
from usage.models import DailyRollup, UsageEvent
from usage.validation import parse_event
from workspaces.models import ALL_SCOPES, ApiKey, Membership, Workspace
from workspaces.services import api_key_authenticate

SMALL = ("--days", "9", "--scale", "0.15")
SECRET = re.compile(r"mbk_[0-9a-f]{12}_\S+")


def seed(*args: str) -> str:
    out = StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def demo_events_stored():
    return UsageEvent.objects.filter(workspace__slug=DEMO_SLUG)


def test_creates_the_workspace_its_people_and_its_keys(db):
    out = seed(*SMALL, "--password", "s3cret-demo", "--url", "http://127.0.0.1:8123/")

    workspace = Workspace.objects.get(slug="demo")
    assert workspace.name == "Pixel Forge Studio"
    assert workspace.timezone == "Europe/Paris"
    roles = dict(Membership.objects.filter(workspace=workspace).values_list("user__username", "role"))
    assert roles == {"demo@meterboard.local": "owner", "viewer@meterboard.local": "viewer"}
    staff = get_user_model().objects.get(username="staff@meterboard.local")
    assert staff.is_staff and staff.is_superuser
    for username in ("demo@meterboard.local", "viewer@meterboard.local", "staff@meterboard.local"):
        assert get_user_model().objects.get(username=username).check_password("s3cret-demo")

    keys = {key.name: key for key in ApiKey.objects.filter(workspace=workspace)}
    assert keys["Production generators"].scopes == ["usage:write"]
    assert sorted(keys["Analytics"].scopes) == sorted(ALL_SCOPES)
    printed = SECRET.findall(out)
    assert len(printed) == 2
    assert {api_key_authenticate(secret) for secret in printed} == set(keys.values())

    assert "http://127.0.0.1:8123/" in out
    assert "demo@meterboard.local / s3cret-demo" in out
    assert "staff@meterboard.local / s3cret-demo" in out
    assert "http://127.0.0.1:8123/admin/" in out


def test_the_demo_owner_can_sign_in_and_see_the_workspace(db):
    seed(*SMALL)

    browser = Client()
    assert browser.login(username=OWNER_EMAIL, password=DEFAULT_PASSWORD)
    page = browser.get("/")
    assert page.status_code == 200
    assert "Pixel Forge Studio" in page.content.decode()


def test_usage_is_priced_and_rolled_up_as_real_traffic_is(db):
    now = timezone.now()
    out = seed(*SMALL, "--now", now.isoformat())

    events = demo_events_stored()
    stored = events.count()
    assert stored > 100
    assert f"{stored:,} stored now" in out
    # Rollups equal raw events, to the micro-dollar.
    raw_micros = sum(amount * 1_000_000 for amount in events.values_list("amount", flat=True))
    rollups = DailyRollup.objects.filter(workspace__slug="demo").aggregate(
        micros=Sum("amount_micros"), events=Sum("events"), quantity=Sum("quantity")
    )
    assert rollups["micros"] == raw_micros
    assert rollups["events"] == stored
    assert rollups["quantity"] == events.aggregate(n=Sum("quantity"))["n"]
    # Every feature, both models, the generation options, both keys.
    assert set(events.values_list("feature", flat=True)) == set(FEATURES)
    assert set(events.filter(feature="generation").values_list("model", flat=True)) == {"sd15", "sdxl"}
    assert events.filter(composition_control=True).exists()
    assert events.filter(spot=True).exists()
    assert set(events.values_list("api_key__name", flat=True)) == {"Production generators", "Analytics"}
    # Nothing in the future, nothing before the first day asked for.
    assert events.order_by("-occurred_at").first().occurred_at <= now
    first_day = now.date() - timedelta(days=8)
    assert events.order_by("occurred_at").first().occurred_at.date() >= first_day
    # The summary's spend by month is the stored events' (rounded to cents for display).
    by_month: Counter = Counter()
    for occurred_at, amount in events.values_list("occurred_at", "amount"):
        by_month[f"{occurred_at:%Y-%m}"] += amount
    printed = re.findall(r"^  (\d{4}-\d{2})  \$\s*([\d,.]+)$", out, flags=re.MULTILINE)
    assert {month: Decimal(amount.replace(",", "")) for month, amount in printed} == {
        month: amount.quantize(Decimal("0.01")) for month, amount in by_month.items()
    }


def test_a_second_run_stores_nothing_new_and_prints_the_login(db):
    now = timezone.now().isoformat()
    seed(*SMALL, "--now", now)
    stored = demo_events_stored().count()
    users = get_user_model().objects.count()

    out = seed(*SMALL, "--now", now)

    assert demo_events_stored().count() == stored
    assert f"{stored:,} events, 0 stored now, {stored:,} already there (duplicates)" in out
    assert "demo@meterboard.local / meterboard-demo" in out
    assert "staff@meterboard.local / meterboard-demo" in out
    assert ApiKey.objects.filter(workspace__slug="demo").count() == 2
    assert get_user_model().objects.count() == users
    assert not SECRET.search(out), "a secret cannot be shown again"
    assert "manage.py create_api_key demo --name NAME" in out


def test_a_later_run_adds_only_what_has_happened_since(db):
    now = timezone.now()
    earlier = now - timedelta(hours=30)
    seed(*SMALL, "--now", earlier.isoformat())
    before = dict(demo_events_stored().values_list("event_id", "content_hash"))

    out = seed(*SMALL, "--now", now.isoformat())

    after = dict(demo_events_stored().values_list("event_id", "content_hash"))
    new = set(after) - set(before)
    assert new, "30 hours of traffic should add events"
    assert all(after[event_id] == content for event_id, content in before.items())
    assert not demo_events_stored().filter(event_id__in=new, occurred_at__lte=earlier).exists()
    assert f"{len(new):,} stored now," in out
    assert "conflict" not in out


def test_refuses_a_future_now_and_an_empty_range(db):
    with pytest.raises(CommandError, match="future"):
        seed("--now", (timezone.now() + timedelta(hours=1)).isoformat())
    with pytest.raises(CommandError, match="--days"):
        seed("--days", "0")
    assert not Workspace.objects.filter(slug="demo").exists()


def test_the_default_three_months_look_like_a_real_studio(db):
    """The default scale's shape, from the generator alone: no ingestion, about a second."""
    now = datetime(2026, 11, 25, 20, 0, tzinfo=dt_timezone.utc)
    start = demo_start(now)
    assert start == date(2026, 9, 1)

    events = list(demo_events(start, now, anchor=start))

    assert 15_000 <= len(events) <= 40_000
    assert len({event.body["event_id"] for event in events}) == len(events)
    assert [event.body for event in demo_events(start, now, anchor=start)][:50] == [
        event.body for event in events[:50]
    ], "the same days must give the same events (that is the idempotency)"
    assert min(event.occurred_at for event in events) >= datetime(2026, 9, 1, tzinfo=dt_timezone.utc)
    assert max(event.occurred_at for event in events) <= now
    assert {event.body["feature"] for event in events} == set(FEATURES)
    assert Counter(event.key_name for event in events).keys() == set(DEMO_KEYS)

    history = price_book_history()
    spend_by_month: Counter = Counter()
    per_day: Counter = Counter()
    for event in events:
        parsed, errors = parse_event(event.body, now=now)
        assert not errors, (event.body, errors)
        price = price_item(history.at(parsed.occurred_at), parsed.item)
        spend_by_month[f"{event.occurred_at:%Y-%m}"] += price.amount
        per_day[event.occurred_at.date()] += 1
    # Month-to-date spend in the tens to hundreds of dollars, each full month likewise.
    for month in ("2026-09", "2026-10", "2026-11"):
        assert Decimal(30) <= spend_by_month[month] <= Decimal(1_000), (month, spend_by_month[month])
    # Weekdays busier than weekends; the last four full weeks busier than the first four.
    full_days = [day for day in per_day if day < now.date()]
    weekday = [per_day[day] for day in full_days if day.weekday() < 5]
    weekend = [per_day[day] for day in full_days if day.weekday() >= 5]
    assert sum(weekday) / len(weekday) > 2 * sum(weekend) / len(weekend)
    first_weeks = sum(per_day[start + timedelta(days=n)] for n in range(28))
    last_weeks = sum(per_day[now.date() - timedelta(days=n)] for n in range(1, 29))
    assert last_weeks > first_weeks * 1.1


# --- History (issue 8, finding 6): events arrive as real traffic does, months close on schedule ----
#
# Seeded with the real clock, so these hold whatever today's date is. Before: every event was
# received at the moment of seeding, inside the close's 5-minute lag, so no past month had a
# statement and this month's preview billed them all again as late usage.

HISTORY = ("--scale", "0.05")  # the default three months, at a twentieth of the volume
WITHIN_MINUTES = timedelta(minutes=6)  # "a few minutes": a reporter's 5-minute interval plus transit


def close_time(period: date) -> datetime:
    """When the beat closes `period` (config/schedule.py): BILLING_CLOSE_DAY of the next month,
    02:00 UTC. Written out here rather than taken from demo.seed."""
    following = next_month(period)
    return datetime(following.year, following.month, settings.BILLING_CLOSE_DAY, 2, tzinfo=dt_timezone.utc)


def live_statement(period: date) -> Statement | None:
    statements = list(
        Statement.objects.filter(workspace__slug=DEMO_SLUG, period=period).exclude(
            status=Statement.Status.VOID
        )
    )
    assert len(statements) <= 1, statements
    return statements[0] if statements else None


def quantity_occurred(period: date) -> int:
    start, end = period_bounds(period)
    events = demo_events_stored().filter(occurred_at__gte=start, occurred_at__lt=end)
    return events.aggregate(n=Sum("quantity"))["n"] or 0


def line_quantity(lines, kind: str) -> int:
    return sum(line.quantity for line in lines if line.kind == kind)


def assert_received_as_real_traffic(until: datetime) -> None:
    rows = list(demo_events_stored().values_list("event_id", "occurred_at", "received_at"))
    assert rows
    for event_id, occurred_at, received_at in rows:
        delay = received_at - occurred_at
        assert timedelta(0) <= delay <= WITHIN_MINUTES, (event_id, delay)
        assert received_at <= until, (event_id, received_at, until)


def assert_closed_on_schedule(period: date) -> Statement:
    """`period` has one live statement, finalized (due) or paid, closed when the beat closes it,
    billing that month's demo usage in full and no late usage."""
    statement = live_statement(period)
    assert statement is not None, f"{period:%Y-%m} has no statement"
    assert statement.status in (Statement.Status.FINALIZED, Statement.Status.PAID), statement.status
    assert statement.finalized_at == close_time(period)
    lines = list(statement.lines.all())
    assert line_quantity(lines, "usage") == quantity_occurred(period) > 0
    assert line_quantity(lines, "late_usage") == 0
    return statement


def test_past_months_are_closed_on_schedule_and_this_months_preview_has_no_late_usage(db):
    out = seed(*HISTORY)
    now = timezone.now()

    assert demo_events_stored().count() > 1_000
    assert_received_as_real_traffic(until=now)
    if connection.vendor == "postgresql":  # each month's arrivals in that month's partition, none left over
        with connection.cursor() as cursor:
            cursor.execute("SELECT tableoid::regclass::text, received_at AT TIME ZONE 'UTC' FROM usage_usageevent")
            rows = cursor.fetchall()
        assert rows and all(table == f"usage_usageevent_{received:%Y_%m}" for table, received in rows)

    start = demo_start(now)
    past = months_between(start, previous_month(month_start(now.date())))  # the months that are over
    assert len(past) == 2
    closed = [period for period in past if close_time(period) <= now]
    for period in closed:
        statement = assert_closed_on_schedule(period)
        assert f"{period:%Y-%m}  ${statement.total:>10,.2f}  finalized on " in out
    for period in past:
        if period not in closed:  # today is before its close on the 2nd: it stays open
            assert live_statement(period) is None
            assert f"{period:%Y-%m}  open until its close on {close_time(period):%Y-%m-%d %H:%M} UTC" in out

    workspace = Workspace.objects.get(slug=DEMO_SLUG)
    this_month = month_start(now.date())
    draft = statement_draft(workspace, this_month, now=now)
    assert line_quantity(draft.built.lines, "usage") == quantity_occurred(this_month)
    # Also on the 1st and 2nd, before last month's close: that month is pending, not late usage here.
    assert [line for line in draft.built.lines if line.kind == "late_usage"] == []

    browser = Client()
    assert browser.login(username=OWNER_EMAIL, password=DEFAULT_PASSWORD)
    preview = browser.get("/api/v1/statements/preview").json()
    assert preview["period"] == f"{this_month:%Y-%m}"
    assert [line for line in preview["lines"] if line["kind"] == "late_usage"] == []
    page = browser.get("/statements/").content.decode()
    assert "No closed month yet" not in page


def test_a_second_run_leaves_the_statements_as_they_are(db):
    now = timezone.now().isoformat()
    seed(*HISTORY, "--now", now)
    events = dict(demo_events_stored().values_list("event_id", "received_at"))
    demo_statements = Statement.objects.filter(workspace__slug=DEMO_SLUG).order_by("pk")
    statements = list(demo_statements.values())
    assert statements

    out = seed(*HISTORY, "--now", now)

    assert f"{len(events):,} events, 0 stored now, {len(events):,} already there (duplicates)" in out
    assert dict(demo_events_stored().values_list("event_id", "received_at")) == events
    assert list(demo_statements.values()) == statements


def test_seeded_on_the_1st_at_0030_last_month_stays_open_until_its_close(db):
    real_now = timezone.now()
    first = real_now.replace(day=1, hour=0, minute=30, second=0, microsecond=0)
    if first > real_now:  # it is the 1st, before 00:30: take last month's 1st
        first = (first - timedelta(days=1)).replace(day=1)
    last_month = month_start(first.date() - timedelta(days=1))
    month_before = month_start(last_month - timedelta(days=1))

    out = seed(*HISTORY, "--now", first.isoformat())

    assert_received_as_real_traffic(until=first)
    assert_closed_on_schedule(month_before)
    assert live_statement(last_month) is None, "closed before its time"
    assert f"{last_month:%Y-%m}  open until its close on {close_time(last_month):%Y-%m-%d %H:%M} UTC" in out
    # Every event up to that moment has arrived (last month's last ones a few minutes after midnight).
    workspace = Workspace.objects.get(slug=DEMO_SLUG)
    expected = demo_events(month_before, first, anchor=growth_anchor(workspace), scale=0.05)
    assert demo_events_stored().count() == len(list(expected))

    # Seeded again later with the real clock: last month is closed when its time has come, with
    # every one of its events on it.
    seed(*HISTORY)
    if close_time(last_month) <= timezone.now():
        assert_closed_on_schedule(last_month)
    else:
        assert live_statement(last_month) is None
    assert_received_as_real_traffic(until=timezone.now())


def test_usage_seeded_after_a_close_it_missed_is_billed_as_late_usage(db):
    """`make run` left running over the 2nd: the beat closes last month with only the usage seeded
    so far. When the demo is seeded again, the events of the gap cannot have been received before
    that close (it did not see them): they are late usage on the next statement, never lost."""
    real_now = timezone.now()
    missed = month_start(month_start(real_now.date()) - timedelta(days=1))  # last month …
    if close_time(missed) > real_now:  # … unless its close is still to come: the month before
        missed = month_start(missed - timedelta(days=1))
    close = close_time(missed)
    seed(*HISTORY, "--now", (close - timedelta(days=3)).isoformat())
    assert live_statement(missed) is None
    workspace = Workspace.objects.get(slug=DEMO_SLUG)
    period_close(missed, only=workspace, now=close)  # the beat, while nothing was seeded

    seed(*HISTORY)

    now = timezone.now()
    statement = live_statement(missed)
    assert statement.finalized_at == close
    billed = line_quantity(list(statement.lines.all()), "usage")
    assert 0 < billed < quantity_occurred(missed)
    following = statement_draft(workspace, month_start(close.date()), now=now)
    assert billed + line_quantity(following.built.lines, "late_usage") == quantity_occurred(missed)
    # Received at that close, not before it (and never after the real clock).
    month_end = close.replace(day=1, hour=0)
    late = demo_events_stored().filter(occurred_at__gt=close - timedelta(days=3), occurred_at__lt=month_end)
    assert late.exists()
    assert all(close <= received <= now for received in late.values_list("received_at", flat=True))

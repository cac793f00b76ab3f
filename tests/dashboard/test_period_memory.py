"""The overview remembers each person's last period (issue 16, part 5): a valid choice in the URL is
stored for that person, and the overview opened without `period` shows it again, in every
workspace and session; invalid input is never stored, and viewing the same choice writes nothing."""

from __future__ import annotations

from datetime import date, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from dashboard.models import UserPreference
from tests.dashboard.conftest import person
from workspaces.models import Membership

pytestmark = pytest.mark.django_db


def utc_today() -> date:
    return timezone.now().astimezone(dt_timezone.utc).date()


def signed_in(user) -> Client:
    """A new browser: its own session."""
    client = Client()
    client.force_login(user)
    return client


def shown(client, **query):
    """The overview's period (key, first day, last day) and the preset marked current."""
    response = client.get("/", query)
    assert response.status_code == 200
    period = response.context["period"]
    return period.key, period.start, period.end


def last_month() -> tuple[date, date]:
    end = utc_today().replace(day=1) - timedelta(days=1)
    return end.replace(day=1), end


def preference_writes(queries) -> list[str]:
    return [q["sql"] for q in queries.captured_queries
            if "dashboard_userpreference" in q["sql"] and not q["sql"].lstrip().upper().startswith("SELECT")]  # fmt: skip


def test_a_chosen_preset_is_shown_again_when_the_overview_is_opened_without_one(owner, usage):
    client = signed_in(owner)
    assert shown(client)[0] == "this_month"
    assert shown(client, period="last_3")[0] == "last_3"
    key, start, end = shown(client)
    assert (key, end) == ("last_3", utc_today())
    page = client.get("/").content.decode()
    assert 'period=last_3" aria-current="true">Last 3 months</a>' in page
    # A new sign-in (another session) keeps it.
    assert shown(signed_in(owner))[0] == "last_3"


def test_a_remembered_custom_range_keeps_its_days(owner, usage):
    client = signed_in(owner)
    first, last = last_month()
    assert shown(client, period="custom", start=first.isoformat(), end=last.isoformat()) == ("custom", first, last)
    assert shown(client) == ("custom", first, last)
    page = client.get("/").content.decode()
    assert f'value="{first.isoformat()}"' in page and f'value="{last.isoformat()}"' in page  # in the picker's form
    stored = UserPreference.objects.get(user=owner)
    assert (stored.overview_period, stored.overview_start, stored.overview_end) == ("custom", first, last)


def test_a_preset_is_stored_by_its_key_so_that_its_days_follow_today(owner, usage):
    shown(signed_in(owner), period="last_12")
    stored = UserPreference.objects.get(user=owner)
    assert (stored.overview_period, stored.overview_start, stored.overview_end) == ("last_12", None, None)


def test_each_person_has_their_own_in_every_workspace(owner, viewer, workspace, other_workspace, usage):
    Membership.objects.create(workspace=other_workspace, user=owner, role=Membership.Role.VIEWER)
    owner_client, viewer_client = signed_in(owner), signed_in(viewer)
    shown(owner_client, workspace="acme", period="last_12")
    shown(viewer_client, workspace="acme", period="last_month")
    assert shown(owner_client, workspace="acme")[0] == "last_12"
    assert shown(owner_client, workspace="globex")[0] == "last_12", "a preference, not the workspace's"
    assert shown(viewer_client, workspace="acme")[0] == "last_month", "viewers remember too"
    assert shown(signed_in(person("new@acme.test", workspace=workspace, role=Membership.Role.ADMIN)))[0] == "this_month"


def test_staff_reading_a_workspace_have_their_own(owner, workspace, usage):
    staff = person("staff@meterboard.test", staff=True)
    client = signed_in(staff)
    assert shown(client, workspace="acme", period="last_3")[0] == "last_3"
    assert shown(client, workspace="acme")[0] == "last_3"
    assert shown(signed_in(owner))[0] == "this_month"


@pytest.mark.parametrize(
    "query",
    [
        {"period": "last_7"},
        {"period": "custom"},
        {"period": "custom", "start": "2026-13-01", "end": "2026-12-31"},
        {"period": "custom", "start": "2026-06-30", "end": "2026-06-01"},
        {"period": "custom", "start": "2024-01-01", "end": "2025-06-30"},  # over 12 months
        {"period": "custom", "start": "1999-12-01", "end": "1999-12-31"},  # before the first day there is
    ],
)
def test_invalid_input_is_never_remembered(owner, usage, query):
    client = signed_in(owner)
    shown(client, period="last_3")
    before = UserPreference.objects.get(user=owner).updated_at
    response = client.get("/", query)
    assert response.context["period"].key == "this_month" and response.context["form"].errors
    assert UserPreference.objects.get(user=owner).updated_at == before
    assert shown(client)[0] == "last_3"


def test_invalid_input_stores_nothing_for_someone_who_never_chose(owner, usage):
    signed_in(owner).get("/", {"period": "custom", "start": "not a day"})
    assert not UserPreference.objects.filter(user=owner).exists()


@pytest.mark.parametrize(
    "stored",
    [
        {"overview_period": "last_7"},  # a preset that is gone
        {"overview_period": "custom", "overview_start": date(2024, 1, 1), "overview_end": date(2025, 6, 30)},
        {"overview_period": "custom", "overview_start": date(1999, 12, 1), "overview_end": date(1999, 12, 31)},
        {"overview_period": "custom"},  # days lost
    ],
)
def test_a_remembered_choice_that_no_longer_holds_gives_this_month_quietly(owner, usage, stored):
    UserPreference.objects.create(user=owner, **stored)
    response = signed_in(owner).get("/")
    assert response.context["period"].key == "this_month"
    assert not response.context["form"].errors
    assert "Showing this month instead" not in response.content.decode()


def test_the_same_choice_again_writes_nothing(owner, usage):
    client = signed_in(owner)
    with CaptureQueriesContext(connection) as first:
        shown(client, period="last_3")
    assert len(preference_writes(first)) >= 1
    written = UserPreference.objects.get(user=owner).updated_at
    with CaptureQueriesContext(connection) as again:
        shown(client, period="last_3")
        shown(client)
        client.get("/usage/")
        shown(client)
    assert preference_writes(again) == []
    assert UserPreference.objects.get(user=owner).updated_at == written
    # A different choice is written, once.
    with CaptureQueriesContext(connection) as changed:
        shown(client, period="last_month")
    assert len([sql for sql in preference_writes(changed) if sql.lstrip().upper().startswith("UPDATE")]) == 1
    assert UserPreference.objects.get(user=owner).overview_period == "last_month"

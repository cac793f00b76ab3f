"""Times as a workspace reads them (issue 16, part 5): every moment a page shows is in the
workspace's time zone, in a <time> whose title is the UTC time (what a hover shows) and whose
datetime attribute is machine-readable UTC; days and billing months stay UTC, and say so."""

from __future__ import annotations

import re
from datetime import date, datetime
from datetime import timezone as dt_timezone
from pathlib import Path

import pytest
from django.conf import settings

from billing.close import statement_close
from billing.payments import statement_charge
from tests.conftest import event
from tests.dashboard.conftest import person
from usage.services import events_ingest
from workspaces.models import Membership

pytestmark = pytest.mark.django_db

TIME = re.compile(r'<time datetime="([^"]+)" title="([^"]+)">([^<]+)</time>')
OCCURRED = datetime(2026, 10, 20, 22, 15, 30, tzinfo=dt_timezone.utc)  # Oct 21, 03:45:30 in Kolkata


@pytest.fixture
def kolkata(workspace, api_key, local_stripe):
    """A workspace five and a half hours east of UTC, with an event late on Oct 20 (UTC) that is
    already Oct 21 there, and October closed and charged (no card: it fails)."""
    workspace.timezone = "Asia/Kolkata"
    workspace.save(update_fields=["timezone"])
    events_ingest(workspace=workspace, api_key=api_key, now=OCCURRED, raw_events=[
        event(event_id="late-evening", occurred_at=OCCURRED.isoformat(), quantity=500),
    ])  # fmt: skip
    statement, _ = statement_close(
        workspace, date(2026, 10, 1), now=datetime(2026, 11, 2, 2, 0, tzinfo=dt_timezone.utc)
    )
    statement_charge(statement)
    owner = person("owner@acme.test", workspace=workspace, role=Membership.Role.OWNER)
    return statement, owner


def times(html: str) -> list[tuple[str, str, str]]:
    return TIME.findall(html)


def test_a_moment_shows_in_the_workspace_zone_with_utc_on_hover(client, kolkata):
    statement, owner = kolkata
    client.force_login(owner)
    html = client.get("/usage/?workspace=acme&start=2026-10-01&end=2026-10-31").content.decode()
    assert ("2026-10-20T22:15:30Z", "2026-10-20 22:15:30 UTC", "2026-10-21 03:45:30") in times(html)
    assert "Asia/Kolkata" in html  # the column says whose time it is
    rollups = client.get("/usage/rollups/?workspace=acme&start=2026-10-01&end=2026-10-31").content.decode()
    assert "2026-10-20" in rollups and "Day (UTC)" in rollups  # a rollup's day is a UTC day, and says so

    page = client.get(f"/statements/{statement.pk}/?workspace=acme").content.decode()
    finalized = statement.finalized_at.astimezone(dt_timezone.utc)
    assert (
        finalized.isoformat().replace("+00:00", "Z"),
        "2026-11-02 02:00:00 UTC",
        "Nov 2, 2026 07:30",
    ) in times(page)
    printed = client.get(f"/statements/{statement.pk}/print/?workspace=acme").content.decode()
    assert "Nov 2, 2026 07:30 IST" in printed  # on paper, no hover: the zone is named


def test_every_time_on_the_pages_is_a_time_element_in_the_workspace_zone(client, kolkata):
    statement, owner = kolkata
    client.force_login(owner)
    seen = 0
    for path in ("/usage/?workspace=acme&start=2026-10-01&end=2026-10-31", "/statements/?workspace=acme",
                 f"/statements/{statement.pk}/?workspace=acme", "/keys/?workspace=acme", "/members/?workspace=acme",
                 "/events/?workspace=acme", "/budgets/?workspace=acme", "/credits/?workspace=acme"):  # fmt: skip
        html = client.get(path).content.decode()
        for stamp, title, shown in times(html):
            moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            assert title == moment.strftime("%Y-%m-%d %H:%M:%S UTC"), path
            local = moment.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Kolkata"))
            assert local.strftime("%H:%M") in shown or local.strftime("%b %-d, %Y") in shown, (path, shown)
            seen += 1
    assert seen >= 8  # the event, the statement's finalization and charge, keys, members, events


def test_the_live_panel_gets_the_workspace_time(client, workspace, api_key):
    workspace.timezone = "America/Los_Angeles"
    workspace.save(update_fields=["timezone"])
    client.force_login(person("owner@acme.test", workspace=workspace, role=Membership.Role.OWNER))
    events_ingest(workspace=workspace, api_key=api_key, raw_events=[event(event_id="just-now")])
    answer = client.get("/onboarding/events.json?workspace=acme").json()
    (first,) = answer["events"]
    received = datetime.fromisoformat(first["received_at"])
    expected = received.astimezone(__import__("zoneinfo").ZoneInfo("America/Los_Angeles")).strftime(
        "%H:%M:%S"
    )
    assert first["received_at_local"] == expected


def test_no_dashboard_template_formats_a_time_by_hand():
    """A guard for "everywhere": a time of day formatted with |date in a page would be in the
    page's zone but without the UTC hover; |when does both."""
    offenders = []
    for path in sorted((Path(settings.BASE_DIR) / "templates" / "dashboard").glob("*.html")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for fmt in re.findall(r'\|date:"([^"]*)"', line):
                if re.search(r"[HGghisaAPU]", fmt.replace("\\", "")):
                    offenders.append(f'{path.name}:{number}: |date:"{fmt}"')
    assert not offenders, "use |when for times of day:\n" + "\n".join(offenders)

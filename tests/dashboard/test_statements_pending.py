"""The statements pages between the end of a month and its close (issue 8, finding 3 and E4), and
the staff page's record of close runs (E6), through Django's test client.

In the grace window (the 1st until the scheduled close on BILLING_CLOSE_DAY at 02:00 UTC) the
previous month is shown as its own pending statement beside this month's draft, and this month's
draft bills this month's usage only: never the previous month again as "Late usage".
"""

from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime
from datetime import timezone as dt_timezone
from decimal import Decimal

import pytest
from django.utils import timezone

from billing import drafts as billing
from billing.close import statement_close
from billing.errors import CloseRefused
from billing.models import CloseRun, Statement, StatementLine
from billing.selectors import default_plan
from tests.conftest import event, ingest
from tests.dashboard.conftest import last_month_day, person
from usage.services import events_ingest

UTC = dt_timezone.utc
OCT, NOV, DEC = date(2026, 10, 1), date(2026, 11, 1), date(2026, 12, 1)
FIRST_OF_DECEMBER = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)  # November over, its close tomorrow 02:00


def signed_in(client, user):
    client.force_login(user)
    return client


def text(html: str) -> str:
    """The page's words: tags dropped, spaces collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace(" .", ".").replace(" :", ":").strip()


def element(html: str, element_id: str) -> str:
    """The element with that id, up to its first closing tag of the same name (none is nested)."""
    match = re.search(rf'<(\w+)[^>]*\bid="{element_id}".*?</\1>', html, re.S)
    assert match, f"no #{element_id} in the page"
    return match.group(0)


def received(workspace, api_key, at: datetime, events) -> None:
    """Events as the generation API delivers them: received at `at` (shortly after they occur)."""
    outcome = events_ingest(workspace=workspace, api_key=api_key, raw_events=events, now=at)
    assert all(r.status == "accepted" for r in outcome.results), [r.errors for r in outcome.results]


@pytest.fixture
def clock(monkeypatch):
    """The dashboard's clock, set by the test: `clock.now = datetime(...)`."""

    class Clock:
        now = FIRST_OF_DECEMBER

    monkeypatch.setattr("dashboard.clock.now", lambda: Clock.now)
    return Clock


@pytest.fixture
def grace_window(workspace, api_key):
    """October closed on Nov 2 at 02:00 ($2.00 − $0.50 free tier = $1.50). November: $1.00 + $1.69
    on the 20th, and $0.03 that occurred a few seconds before midnight and arrived on December 1st:
    $2.72 − $0.50 = $2.22, not closed yet. December so far: $2.00 − $0.50 = $1.50."""
    received(workspace, api_key, datetime(2026, 10, 10, 12, 1, tzinfo=UTC),
             [event(occurred_at="2026-10-10T12:00:00Z", quantity=500)])  # fmt: skip
    october, created = statement_close(workspace, OCT, now=datetime(2026, 11, 2, 2, 0, tzinfo=UTC))
    assert created and october.total == Decimal("1.50")
    received(workspace, api_key, datetime(2026, 11, 20, 12, 1, tzinfo=UTC), [
        event(occurred_at="2026-11-20T12:00:00Z", quantity=250),
        event(occurred_at="2026-11-20T12:00:00Z", quantity=10, model="sdxl", steps=50, width=1024, height=1824),
    ])  # fmt: skip
    received(workspace, api_key, datetime(2026, 12, 1, 0, 0, 20, tzinfo=UTC), [
        event(occurred_at="2026-11-30T23:59:50Z", feature="captioning", model=..., steps=..., width=..., height=..., quantity=2),
    ])  # fmt: skip
    received(workspace, api_key, datetime(2026, 12, 1, 8, 1, tzinfo=UTC),
             [event(occurred_at="2026-12-01T08:00:00Z", quantity=500)])  # fmt: skip
    return october


# --- The grace window, with the dashboard's clock set ---------------------------------------------


def test_on_the_1st_last_month_is_pending_and_this_months_draft_bills_this_month_only(
    client, owner, workspace, grace_window, clock
):
    signed_in(client, owner)
    listing = client.get("/statements/").content.decode()
    pending = text(element(listing, "pending-2026-11"))
    assert "November 2026 — pending close" in pending
    assert "closes on December 2 at 02:00 UTC" in pending
    assert "$2.22" in pending  # what closing November now would bill
    assert '<span class="value" id="preview-total">$1.50</span>' in listing  # December: December's usage only
    assert listing.index('id="pending-2026-11"') < listing.index('id="current-month"')  # above this month's
    assert "October 2026" in element(listing, "statements-table")

    preview = client.get("/statements/preview/").content.decode()
    assert "Late usage" not in preview  # finding 3: not November again on December's draft
    assert '<td class="num" id="amount-due">$1.50</td>' in preview
    november = element(preview, "pending-2026-11")
    assert '<td class="num" id="pending-2026-11-amount-due">$2.22</td>' in november
    assert "Captioning" in november  # the event that arrived after midnight belongs to November
    assert "November 2026" in text(element(preview, "pending-notice"))

    # The pages show what billing's preview computes at that instant (E4).
    *months, current = billing.statement_preview(workspace, now=clock.now)
    assert [m.period for m in months] == [NOV] and current.period == DEC
    assert all(line.kind != "late_usage" for line in current.built.lines)

    # The scheduled close on the 2nd finalizes exactly the pending statement; December's draft
    # does not move (before the fix it dropped by November's whole usage).
    november_statement, created = statement_close(workspace, NOV, now=datetime(2026, 12, 2, 2, 0, tzinfo=UTC))
    assert created and november_statement.total == Decimal("2.22")
    clock.now = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    listing = client.get("/statements/").content.decode()
    assert 'class="card pending-month"' not in listing and "pending close" not in listing
    assert '<span class="value" id="preview-total">$1.50</span>' in listing
    assert "November 2026" in element(listing, "statements-table")


def test_the_pending_label_follows_the_close_day_and_says_when_a_close_is_overdue(
    client, owner, workspace, grace_window, clock, settings
):
    signed_in(client, owner)
    settings.BILLING_CLOSE_DAY = 3
    clock.now = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    assert "closes on December 3 at 02:00 UTC" in text(client.get("/statements/").content.decode())

    settings.BILLING_CLOSE_DAY = 2
    clock.now = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)  # the close of the 2nd did not close November
    listing = text(client.get("/statements/").content.decode())
    assert "November 2026 — pending close" in listing
    assert "its close was due on December 2 at 02:00 UTC" in listing
    preview = client.get("/statements/preview/").content.decode()
    assert "Late usage" not in preview and '<td class="num" id="amount-due">$1.50</td>' in preview


def test_a_preview_that_cannot_be_built_is_explained_not_a_server_error(client, owner, workspace, grace_window, clock, monkeypatch):
    def refused(*args, **kwargs):
        raise CloseRefused("acme: 2026-11 was closed with a cutoff later than this one")

    monkeypatch.setattr("billing.drafts.statement_preview", refused)
    signed_in(client, owner)
    for path in ("/statements/", "/statements/preview/"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert "cannot be computed right now" in response.content.decode(), path
        assert "cutoff" not in response.content.decode(), "the reason is logged, not shown to customers"
    assert "October 2026" in client.get("/statements/").content.decode()  # the closed months still show


# --- The real clock -----------------------------------------------------------------------------


def test_with_the_real_clock_last_months_unclosed_usage_is_pending_and_this_months_is_the_draft(client, owner, workspace, api_key, api):
    """Whatever today is: an event of the previous calendar month that no close has billed is that
    month's pending statement ($1.20 − $0.50 free tier), one of now is this month's draft ($2.00 − $0.50)."""
    now = timezone.now().replace(microsecond=0)
    earlier = last_month_day(now)
    ingest(workspace, api_key, [event(occurred_at=earlier.isoformat(), quantity=300)])
    ingest(workspace, api_key, [event(occurred_at=now.isoformat(), quantity=500)])
    anchor = f"pending-{earlier:%Y-%m}"

    signed_in(client, owner)
    listing = client.get("/statements/").content.decode()
    pending = text(element(listing, anchor))
    assert f"{earlier:%B %Y} — pending close" in pending and "$0.70" in pending
    assert '<span class="value" id="preview-total">$1.50</span>' in listing
    preview = client.get("/statements/preview/").content.decode()
    assert "Late usage" not in preview
    assert '<td class="num" id="amount-due">$1.50</td>' in preview
    assert f'<td class="num" id="{anchor}-amount-due">$0.70</td>' in preview

    # The API's preview says the same.
    answer = api.get("/api/v1/statements/preview").json()
    assert answer["period"] == f"{now:%Y-%m}" and Decimal(answer["total"]) == Decimal("1.50")
    assert [(p["period"], p["status"], Decimal(p["total"])) for p in answer["pending"]] == [
        (f"{earlier:%Y-%m}", "pending", Decimal("0.70"))
    ]


# --- Line kinds ----------------------------------------------------------------------------------


def test_an_adjustment_line_shows_on_the_statement_its_summary_and_csv(client, owner, workspace):
    statement = Statement.objects.create(
        workspace=workspace, period=OCT, status=Statement.Status.FINALIZED, plan=default_plan(),
        total=Decimal("0.700000"), amount_due_cents=70, usage_cutoff=datetime(2026, 11, 2, 1, 55, tzinfo=UTC),
        finalized_at=datetime(2026, 11, 2, 2, 0, tzinfo=UTC),
    )  # fmt: skip
    StatementLine.objects.create(statement=statement, position=1, kind="usage", description="Image generation: sd15",
                                 quantity=100, unit_price=Decimal("0.004"), amount=Decimal("0.400000"))  # fmt: skip
    StatementLine.objects.create(statement=statement, position=2, kind="adjustment", quantity=1,
                                 description="Correction of the September 2026 statement (reissued): balance billed twice",
                                 unit_price=Decimal("0.300000"), amount=Decimal("0.300000"))  # fmt: skip
    signed_in(client, owner)
    detail = client.get(f"/statements/{statement.pk}/").content.decode()
    assert detail.count("Correction of the September 2026 statement") == 1  # in the summary, above the usage detail
    assert 'class="kind-adjustment"' in detail
    rows = list(csv.reader(io.StringIO(client.get(f"/statements/{statement.pk}.csv").content.decode())))
    assert [r[1] for r in rows[1:-2]] == ["usage", "adjustment"]
    assert "Correction of the September 2026" in client.get(f"/statements/{statement.pk}/print/").content.decode()


# --- Staff: close runs --------------------------------------------------------------------------


def test_the_staff_page_lists_close_runs_and_flags_failed_ones_at_the_top(client, db, clock):
    clock.now = datetime(2025, 5, 2, 16, 0, tzinfo=UTC)  # the April close started 14 hours ago

    def run(period, status, started, **fields):
        return CloseRun.objects.create(period=period, status=status, started_at=started, **fields)

    old = run(date(2024, 11, 1), "failed", datetime(2024, 12, 2, 2, 0, tzinfo=UTC), attempts=7,
              finished_at=datetime(2024, 12, 2, 20, 0, tzinfo=UTC), error="OperationalError: disk full")  # fmt: skip
    succeeded_run = run(date(2025, 1, 1), "succeeded", datetime(2025, 2, 2, 2, 0, tzinfo=UTC), attempts=1,
        finished_at=datetime(2025, 2, 2, 2, 1, tzinfo=UTC), months_closed=["2024-11", "2024-12", "2025-01"],
        statements_created=42)  # fmt: skip
    failed = run(date(2025, 2, 1), "failed", datetime(2025, 3, 2, 2, 0, tzinfo=UTC), attempts=7,
                 finished_at=datetime(2025, 3, 2, 14, 0, tzinfo=UTC),
                 error="OperationalError: could not connect to server")  # fmt: skip
    retrying = run(date(2025, 3, 1), "retrying", datetime(2025, 4, 2, 2, 0, tzinfo=UTC), attempts=2,
                   error="TimeoutError: Stripe did not answer")  # fmt: skip
    stuck = run(date(2025, 4, 1), "running", datetime(2025, 5, 2, 2, 0, tzinfo=UTC), attempts=1)

    signed_in(client, person("staff@meterboard.test", staff=True))
    page = client.get("/staff/").content.decode()
    problems = element(page, "close-problems")
    assert page.index('id="close-problems"') < page.index('class="tiles"')  # at the top
    assert [int(pk) for pk in re.findall(r'<li data-close-run="(\d+)"', problems)] == [stuck.pk, retrying.pk, failed.pk]
    words = text(problems)
    assert ("Closing 2025-02 failed: OperationalError: could not connect to server. "
            "Run python manage.py close_period 2025-02") in words  # fmt: skip
    assert "Closing 2025-03 is failing (attempt 2, retrying on its own): TimeoutError: Stripe did not answer" in words
    assert "Closing 2025-04 has been running since" in words and "close_period 2025-04" in words
    assert "disk full" not in words  # 2024-11 was caught up by the 2025-01 close

    table = element(page, "close-runs")
    rows = re.findall(r'<tr class="close-(\w+)" data-close-run="(\d+)">(.*?)</tr>', table, re.S)
    assert [(status, int(pk)) for status, pk, _ in rows] == [
        ("running", stuck.pk), ("retrying", retrying.pk), ("failed", failed.pk), ("succeeded", succeeded_run.pk),
        ("failed", old.pk),
    ]  # newest first
    succeeded = text(rows[3][2])
    assert "2025-01" in succeeded and "42" in succeeded and "2024-11, 2024-12" in succeeded  # months caught up
    assert "Feb 2, 2025 02:00" in succeeded and "Feb 2, 2025 02:01" in succeeded
    failed_row = text(rows[2][2])
    assert "Failed" in failed_row and "7" in failed_row and "could not connect to server" in failed_row

    clock.now = datetime(2025, 5, 2, 9, 0, tzinfo=UTC)  # 7 hours: it may be a retry in progress
    problems = element(client.get("/staff/").content.decode(), "close-problems")
    assert [int(pk) for pk in re.findall(r'<li data-close-run="(\d+)"', problems)] == [retrying.pk, failed.pk]


def test_the_staff_page_without_close_runs(client, db):
    signed_in(client, person("staff@meterboard.test", staff=True))
    page = client.get("/staff/").content.decode()
    assert 'id="close-problems"' not in page and "No close has run yet." in page

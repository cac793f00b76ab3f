"""The dashboard in a real browser: Playwright drives Debian's Chromium against the live server.

Every test also fails on a console error or an uncaught exception in the page (the `page` fixture).
`make screenshots` runs test_every_page_renders (and test_browser_onboarding's new workspace) with
MB_SCREENSHOTS=var/screenshots: every page at 1280 and 390 px.
"""

from __future__ import annotations

import csv
import os
import re
from datetime import datetime, time, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from django.utils import timezone

from billing.close import statement_close
from billing.models import CloseRun, Statement, StripeCustomer
from billing.payments import statement_charge
from budgets.models import Budget
from core.periods import add_months
from dashboard.selectors.statements import scheduled_close
from tests.conftest import event
from tests.dashboard.conftest import last_month_day, person, sign_in
from usage.services import events_ingest
from workspaces.models import ApiKey

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def chart_total(page, chart_id: str) -> Decimal:
    """The sum of every bar the chart drew, read from plotly.js's own figure in the page."""
    page.wait_for_selector(f"#{chart_id} .main-svg")
    values = page.evaluate(
        """(id) => document.getElementById(id).data.flatMap((trace) => trace.y.map((y) => y.toFixed(6)))""",
        chart_id,
    )
    return sum((Decimal(v) for v in values), Decimal(0))


def api_total(page, start, end) -> Decimal:
    """What the usage API says, asked with the page's own session."""
    answer = page.request.get(f"{page.base_url}/api/v1/usage?workspace=acme&start={start}&end={end}").json()
    return Decimal(answer["total"])


def utc_today():
    return timezone.now().astimezone(dt_timezone.utc).date()


def test_sign_in_and_the_charts_draw_the_numbers_the_api_reports(page, owner, usage):
    sign_in(page, "owner@acme.test")
    page.wait_for_selector("#chart-daily .main-svg")
    for chart in ("chart-daily", "chart-cumulative", "chart-model", "chart-resolution", "chart-steps", "chart-key"):
        assert page.locator(f"#{chart} .main-svg").count() >= 1, chart
    today = utc_today()
    this_month = api_total(page, today.replace(day=1), today)
    assert this_month == Decimal(usage["this_month"])
    assert chart_total(page, "chart-daily") == this_month
    # Horizontal bars: x holds the amounts.
    key_amounts = page.evaluate("() => document.getElementById('chart-key').data[0].x.map((x) => x.toFixed(6))")
    assert sum(Decimal(x) for x in key_amounts) == this_month
    assert page.locator("#mtd-spend").inner_text() == "$7.78"
    # Every chart's numbers are a table too.
    numbers = page.locator("section[aria-labelledby=chart-daily-title] details.numbers")
    numbers.locator("summary").click()
    assert numbers.locator("table").is_visible()
    assert numbers.locator("tfoot td").last.inner_text() == "$7.78"


def test_the_period_picker_changes_the_charts_and_the_url(page, owner, usage):
    sign_in(page, "owner@acme.test")
    page.wait_for_selector("#chart-daily .main-svg")
    before = chart_total(page, "chart-daily")
    page.get_by_role("link", name="Last month").click()
    page.wait_for_url(re.compile(r"period=last_month"))
    after = chart_total(page, "chart-daily")
    first = utc_today().replace(day=1)
    last_month_end = first - timedelta(days=1)
    assert after == api_total(page, last_month_end.replace(day=1), last_month_end) == Decimal(usage["last_month"])
    assert after != before
    # A custom range, kept in the URL so that it can be shared.
    page.get_by_text("Custom range").click()
    page.get_by_label("From (UTC day)").fill(last_month_end.replace(day=1).isoformat())
    page.get_by_label("To (UTC day, included)").fill(utc_today().isoformat())
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r"period=custom"))
    assert chart_total(page, "chart-daily") == Decimal(usage["this_month"]) + Decimal(usage["last_month"])
    shared = page.url
    page.goto(shared)
    assert chart_total(page, "chart-daily") == Decimal(usage["this_month"]) + Decimal(usage["last_month"])


def test_the_overview_remembers_the_period_across_pages_and_sign_ins(page, owner, usage):
    today = utc_today()
    three_months = add_months(today.replace(day=1), -2), today

    def shows_last_3_months():
        assert "period=" not in page.url
        assert page.locator(".period-picker [aria-current=true]").all_inner_texts() == ["Last 3 months"]
        assert chart_total(page, "chart-daily") == api_total(page, *three_months) == (
            Decimal(usage["this_month"]) + Decimal(usage["last_month"])
        )

    sign_in(page, "owner@acme.test")
    page.get_by_role("link", name="Last 3 months").click()
    page.wait_for_url(re.compile(r"period=last_3"))
    page.get_by_role("link", name="Usage").click()
    page.wait_for_url(re.compile(r"/usage/"))
    page.locator("nav.tabs").get_by_role("link", name="Overview").click()
    page.wait_for_url(re.compile(r"/\?workspace=acme$"))
    shows_last_3_months()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/login/"))
    sign_in(page, "owner@acme.test")
    shows_last_3_months()


def test_create_a_key_copy_its_secret_once_and_revoke_it(page, browser_context, owner, workspace, usage):
    browser_context.grant_permissions(["clipboard-read", "clipboard-write"], origin=page.base_url)
    sign_in(page, "owner@acme.test")
    page.get_by_role("link", name="API keys").click()
    page.get_by_label("Name").fill("render farm")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-secret").input_value()
    assert secret.startswith("mbk_")
    page.get_by_role("button", name="Copy").click()
    page.wait_for_function("() => document.querySelector('button[data-copy]').textContent === 'Copied'")
    assert page.evaluate("() => navigator.clipboard.readText()") == secret
    headers = {"Authorization": f"Bearer {secret}"}
    assert requests.get(f"{page.base_url}/api/v1/usage", headers=headers, timeout=10).status_code == 200

    page.goto(f"{page.base_url}/keys/")
    assert page.locator("#new-secret").count() == 0, "the secret is shown once"
    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke render farm").click()
    page.wait_for_selector("text=Revoked “render farm”")
    assert requests.get(f"{page.base_url}/api/v1/usage", headers=headers, timeout=10).status_code == 401
    assert ApiKey.objects.get(name="render farm").revoked_at is not None


def test_create_a_budget_and_see_it_on_the_overview(page, owner, workspace, usage, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    sign_in(page, "owner@acme.test")
    page.get_by_role("link", name="Budgets").click()
    page.get_by_label("Monthly amount (USD)").fill("10")
    page.get_by_label("Alert at (percent of the amount)").fill("50, 100")
    page.get_by_label("Hard limit").check()
    page.get_by_label("Webhook URLs").fill("http://127.0.0.1:9/meterboard")
    page.get_by_role("button", name="Create budget").click()
    secret = page.locator("#hook-secret-1").input_value()
    budget = Budget.objects.get(workspace=workspace)
    assert secret == budget.webhooks.get().secret
    assert budget.amount == Decimal("10") and budget.thresholds == [50, 100] and budget.hard_limit
    card = page.locator(f"[data-budget='{budget.pk}']")
    assert "$7.78 spent this month (77.8 %)" in card.inner_text()
    page.get_by_role("link", name="Overview").click()
    page.wait_for_selector("#chart-cumulative .main-svg")
    names = page.evaluate("() => document.getElementById('chart-cumulative').data.map((trace) => trace.name)")
    assert "Budget 10.00 USD (hard limit)" in names
    assert "77.8 %" in page.locator(".tiles").inner_text()


def test_download_the_usage_csv(page, owner, usage, tmp_path):
    sign_in(page, "owner@acme.test")
    page.get_by_role("link", name="Usage").click()
    assert "4 events" in page.locator("#export-hint").inner_text()
    with page.expect_download() as download_info:
        page.locator("#export-events").click()
    path = tmp_path / "events.csv"
    download_info.value.save_as(path)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 4
    assert sum(Decimal(row["amount_usd"]) for row in rows) == Decimal(usage["this_month"])
    assert sorted(row["feature"] for row in rows) == ["generation", "generation", "training", "upscaling"]


def test_add_a_card_through_stripe_js(page, owner, workspace, local_stripe):
    sign_in(page, "owner@acme.test")
    page.goto(f"{page.base_url}/payment/?workspace=acme")
    page.wait_for_selector("#card-element input")  # localstripe's stand-in for the card Element
    page.fill("#card-element input[placeholder=number]", "4242424242424242")
    page.fill("#card-element input[placeholder=exp_month]", "12")
    page.fill("#card-element input[placeholder=exp_year]", "34")
    page.fill("#card-element input[placeholder=cvc]", "123")
    page.fill("#card-element input[placeholder=postal_code]", "75001")
    page.get_by_role("button", name="Save card").click()
    page.wait_for_url(re.compile(r"saved=1"))
    assert "Card saved" in page.content()
    customer = StripeCustomer.objects.get(workspace=workspace)
    assert customer.default_payment_method.startswith("pm_")
    assert "4242" in page.locator("#current-card").inner_text()
    stripe_side = local_stripe.get(f"/v1/customers/{customer.customer_id}").json()
    assert stripe_side["invoice_settings"]["default_payment_method"] == customer.default_payment_method


def test_a_viewer_cannot_reach_admin_actions(page, viewer, workspace, api_key, usage):
    sign_in(page, "viewer@acme.test")
    page.get_by_role("link", name="API keys").click()
    assert page.get_by_role("button", name="Create key").count() == 0
    assert page.get_by_role("button", name=re.compile("^Revoke")).count() == 0
    page.get_by_role("link", name="Members").click()
    assert page.get_by_role("button", name="Add member").count() == 0
    assert page.get_by_role("button", name=re.compile("^Remove")).count() == 0
    page.get_by_role("link", name="Payment").click()
    assert page.locator("#card-form").count() == 0
    # Forging the request does not help either.
    token = page.context.cookies()
    csrf = next(c["value"] for c in token if c["name"] == "csrftoken")
    forged = page.request.post(
        f"{page.base_url}/keys/create/?workspace=acme",
        form={"name": "sneaky", "scopes": "usage:read"},
        headers={"X-CSRFToken": csrf, "Referer": page.base_url + "/keys/"},
    )
    assert forged.status == 403
    assert not ApiKey.objects.filter(name="sneaky").exists()


def test_a_user_of_one_workspace_cannot_see_another_by_changing_the_url(page, owner, other_owner, other_workspace, usage):
    sign_in(page, "owner@acme.test")
    for path in ("/", "/usage/", "/statements/", "/keys/", "/members/"):
        response = page.goto(f"{page.base_url}{path}?workspace=globex")
        assert response.status == 404, path
        assert "Globex" not in page.content()
    page.console_errors.clear()  # the browser logs each expected 404
    response = page.goto(f"{page.base_url}/?workspace=acme")
    assert response.status == 200


def wide_elements(page) -> list[str]:
    """Elements that stick out of the viewport (outside any horizontally scrolling box)."""
    return page.evaluate(
        """() => {
          const width = window.innerWidth, found = [];
          for (const el of document.querySelectorAll("body *")) {
            if (el.getBoundingClientRect().right <= width + 1) continue;
            let parent = el.parentElement, scrolls = false;
            for (; parent; parent = parent.parentElement) {
              if (["auto", "scroll", "hidden"].includes(getComputedStyle(parent).overflowX)) { scrolls = true; break; }
            }
            found.push(`${el.tagName.toLowerCase()}.${el.className}#${el.id}${scrolls ? " (in a scroller)" : ""}`);
          }
          return found.slice(0, 10);
        }"""
    )


WIDTHS = ((1280, ""), (390, "-phone"))  # a desktop's and a phone's, and the screenshots' suffix
SCREENSHOT_PAGES = [
    ("overview", "/?workspace=acme&period=this_month"),  # not the period remembered from the page before
    ("budgets", "/budgets/?workspace=acme"),
    ("overview-last-3-months", "/?workspace=acme&period=last_3"),
    ("usage-events", "/usage/?workspace=acme"),
    ("usage-rollups", "/usage/rollups/?workspace=acme"),
    ("statements", "/statements/?workspace=acme"),
    ("statement-preview", "/statements/preview/?workspace=acme"),
    ("events", "/events/?workspace=acme"),
    ("api-keys", "/keys/?workspace=acme"),
    ("members", "/members/?workspace=acme"),
    ("payment", "/payment/?workspace=acme"),
    ("billing-details", "/billing-details/?workspace=acme"),
    ("credits", "/credits/?workspace=acme"),
]


def test_every_page_renders_without_console_errors(page, browser_context, owner, viewer, workspace, usage, local_stripe):
    """Each page, on a desktop and on a phone's width. With MB_SCREENSHOTS=<folder> (`make
    screenshots`), a full-page screenshot of each is saved there, sign-in and the staff pages included."""
    # The month before last closed on schedule, and its charge failed (no card yet); last month
    # (the `usage` fixture's) is over but not closed: the statement pages show it all, last month
    # as a pending statement above this month's draft. The closed month's usage is of several
    # features and models, so that its statement shows its lines grouped.
    last_month = last_month_day().date().replace(day=1)
    before_last = (last_month - timedelta(days=1)).replace(day=1)
    occurred = datetime.combine(before_last.replace(day=15), time(12, 0), tzinfo=dt_timezone.utc)
    outcome = events_ingest(workspace=workspace, api_key=usage["second_key"], now=occurred + timedelta(minutes=1), raw_events=[
        event(occurred_at=occurred.isoformat(), feature="training", model=..., steps=..., width=..., height=...),
        event(occurred_at=occurred.isoformat(), quantity=120),
        event(occurred_at=occurred.isoformat(), quantity=40, steps=50),
        event(occurred_at=occurred.isoformat(), quantity=8, model="sdxl", steps=40, width=1024, height=1024),
        event(occurred_at=occurred.isoformat(), feature="upscaling", quantity=6, model=..., steps=..., width=..., height=...),
    ])  # fmt: skip
    assert {result.status for result in outcome.results} == {"accepted"}
    statement, _ = statement_close(workspace, before_last, now=scheduled_close(before_last))
    budget = Budget.objects.create(workspace=workspace, amount=Decimal("20"), thresholds=[50, 80, 100])
    statement_charge(statement)
    assert Statement.objects.get(pk=statement.pk).status == Statement.Status.PAYMENT_FAILED
    # Staff see the close of last month failing.
    CloseRun.objects.create(period=last_month, status=CloseRun.Status.FAILED, attempts=7, started_at=timezone.now(),
                            finished_at=timezone.now(), error="OperationalError: could not connect to server")  # fmt: skip
    pages = [*SCREENSHOT_PAGES,
             ("budget-edit", f"/budgets/{budget.pk}/?workspace=acme"),
             ("statement", f"/statements/{statement.pk}/?workspace=acme"),
             ("statement-print", f"/statements/{statement.pk}/print/?workspace=acme")]  # fmt: skip
    folder = Path(os.environ["MB_SCREENSHOTS"]) if os.environ.get("MB_SCREENSHOTS") else None
    if folder:
        folder.mkdir(parents=True, exist_ok=True)
    for width, suffix in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{page.base_url}/login/")
        if folder:
            page.screenshot(path=str(folder / f"sign-in{suffix}.png"), full_page=True)
    sign_in(page, "owner@acme.test")
    for width, suffix in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        for name, path in pages:
            response = page.goto(page.base_url + path)
            assert response.status == 200, path
            if name.startswith("overview"):
                page.wait_for_selector("#chart-daily[data-drawn]")
            if name == "payment":
                page.wait_for_selector("#card-element input")
            if name == "statements":
                pending = page.locator(f"#pending-{last_month:%Y-%m}")
                assert pending.is_visible() and f"{last_month:%B %Y} — pending close" in pending.inner_text()
                assert page.locator("#preview-total").inner_text() == "$7.28"  # this month's usage only
            if name == "statement-preview":
                assert "Late usage" not in page.content()
                assert page.locator("#amount-due").inner_text() == "$7.28"
                # The pending month's usage, grouped by feature and model; a group opens to its lines.
                group = page.locator(f"#pending-{last_month:%Y-%m} details.usage-group").first
                group.locator("summary").click()
                assert group.locator("table.lines").is_visible()
            if name == "statement":
                # Grouped: usage per feature and model, the first group opened to its lines.
                groups = page.locator("#statement-details details.usage-group")
                assert groups.count() >= 4
                groups.first.locator("summary").click()
                assert groups.first.locator("table.lines").is_visible()
            overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{path} is wider than the screen at {width}px by {overflow}px: {wide_elements(page)}"
            if folder:
                page.screenshot(path=str(folder / f"{name}{suffix}.png"), full_page=True)
    assert not page.console_errors
    staff_pages = [("staff", "/staff/"), ("admin", "/admin/")]
    page.context.clear_cookies()
    person("staff@meterboard.test", staff=True)
    sign_in(page, "staff@meterboard.test")
    for width, suffix in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        for name, path in staff_pages:
            assert page.goto(page.base_url + path).status == 200, path
            if name == "staff":
                assert f"Closing {last_month:%Y-%m} failed" in page.locator("#close-problems").inner_text()
                assert page.locator("#close-runs tr.close-failed").count() == 1
                overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 1, f"{path} is wider than the screen at {width}px by {overflow}px: {wide_elements(page)}"
            if folder:
                page.screenshot(path=str(folder / f"{name}{suffix}.png"), full_page=True)

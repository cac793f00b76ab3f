"""The "Get started" checklist in a real Chromium (issue 16, part 1): a new workspace creates its
key from the overview, its first event (sent to the live server's API with that key) appears in the
live panel without a reload, and a budget ticks its step. Fixtures: tests/dashboard/conftest.py."""

from __future__ import annotations

import os
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from django.utils import timezone

from budgets.models import Budget
from tests.conftest import event, ingest
from tests.dashboard.conftest import sign_in
from tests.dashboard.test_browser import WIDTHS
from workspaces.models import ApiKey

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def step_state(page, name: str) -> str:
    return page.locator(f'#get-started [data-step="{name}"] .step-state').inner_text()


def screenshot(page, name: str) -> None:
    """With MB_SCREENSHOTS=<folder> (`make screenshots`), full-page screenshots of the page as it
    is, at 1280 px and at a phone's 390 px (`<name>-phone.png`)."""
    if os.environ.get("MB_SCREENSHOTS"):
        folder = Path(os.environ["MB_SCREENSHOTS"])
        folder.mkdir(parents=True, exist_ok=True)
        for width, suffix in reversed(WIDTHS):  # the phone first: the test goes on at 1280 px
            page.set_viewport_size({"width": width, "height": 900})
            page.screenshot(path=str(folder / f"{name}{suffix}.png"), full_page=True)


def test_a_new_workspace_goes_from_key_to_first_event_seen_live_to_budget(page, owner, workspace):
    sign_in(page, "owner@acme.test")
    screenshot(page, "overview-get-started-new")
    checklist = page.locator("#get-started")
    assert checklist.is_visible() and page.locator("#chart-daily").count() == 0, (
        "a checklist, not empty charts"
    )
    assert [step_state(page, s) for s in ("key", "events", "budget", "card")] == ["To do"] * 4
    assert "Bearer YOUR_API_KEY" in page.locator("#request-curl").inner_text()

    # 1. A key, from the checklist: its secret shown once, and filled into the requests.
    page.get_by_label("Key name").fill("first servers")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-secret").input_value()
    assert secret.startswith("mbk_") and ApiKey.objects.get(workspace=workspace).name == "first servers"
    assert f"Bearer {secret}" in page.locator("#request-curl").inner_text()
    assert step_state(page, "key") == "Done"
    assert page.locator("nav.tabs [aria-current]").inner_text() == "Overview"  # still the overview, not the API keys tab
    assert page.locator("#live-status").inner_text() == "Waiting for your first event…"
    screenshot(page, "overview-get-started-key")

    # 2. The first event, sent by "another machine" to the live server's API: seen without a reload.
    page.evaluate("() => { window.notReloaded = true; }")
    now = timezone.now().replace(microsecond=0)
    sent = requests.post(
        f"{page.base_url}/api/v1/events",
        json={"events": [event(event_id="my-very-first", occurred_at=now.isoformat(), quantity=5)]},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=10,
    )
    assert sent.json()["results"][0]["status"] == "accepted"
    arrived = page.locator('#live-events li[data-event-id="my-very-first"]')
    arrived.wait_for(timeout=10_000)  # polled every 2 s
    assert "generation · sd15 × 5 — $0.02" in arrived.inner_text()
    assert step_state(page, "events") == "Done"
    assert page.locator("#steps-left").inner_text() == "2"
    assert page.evaluate("() => window.notReloaded") is True, "the page was not reloaded"

    # 3. A budget: its step ticks on the overview.
    page.locator("#get-started").get_by_role("link", name="Set a monthly budget").click()
    page.get_by_label("Monthly amount (USD)").fill("25")
    page.get_by_role("button", name="Create budget").click()
    page.wait_for_selector("[data-budget]")
    assert Budget.objects.get(workspace=workspace).amount == Decimal("25")
    page.get_by_role("link", name="Overview").click()
    assert step_state(page, "budget") == "Done"
    assert [step_state(page, s) for s in ("key", "events", "card")] == ["Done", "Done", "To do"]
    assert page.locator("#steps-left").inner_text() == "1"
    page.wait_for_selector("#chart-daily[data-drawn]")  # with an event, the charts are back
    assert secret not in page.content(), "the secret was shown once"
    screenshot(page, "overview-get-started-budget")


def test_the_checklist_fits_a_phone_and_the_live_panel_lists_events_sent_before(
    page, owner, workspace, api_key
):
    """Events that arrived before the page opened are listed too; nothing is wider than a phone."""
    now = timezone.now().replace(microsecond=0)
    earlier = [
        event(event_id=f"earlier-{n}", occurred_at=(now - timedelta(minutes=n)).isoformat()) for n in range(3)
    ]
    ingest(workspace, api_key, earlier)
    page.set_viewport_size({"width": 360, "height": 800})
    sign_in(page, "owner@acme.test")
    page.locator('#live-events li[data-event-id="earlier-0"]').wait_for(timeout=10_000)
    assert page.locator("#live-events li").count() == 3
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"the overview is wider than a phone by {overflow}px"

"""Dashboard fixtures: people with roles, usage this month and last, a real localstripe, and a real
browser (Playwright driving Debian's Chromium) against pytest-django's live server."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, time, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from tests.conftest import event, ingest
from workspaces.models import Membership
from workspaces.services import api_key_create

# Playwright's sync API runs an event loop in this thread; Django refuses ORM calls from a thread
# with a running loop unless told that this is fine (it is: the loop only drives the browser).
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

PASSWORD = "correct horse battery staple"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def person(email: str, *, workspace=None, role: str | None = None, staff: bool = False):
    """A user who can sign in with PASSWORD, member of `workspace` with `role` when given."""
    User = get_user_model()
    user, _ = User.objects.get_or_create(username=email, defaults={"email": email})
    user.set_password(PASSWORD)
    user.is_staff = user.is_superuser = staff
    user.save()
    if workspace is not None:
        Membership.objects.update_or_create(workspace=workspace, user=user, defaults={"role": role})
    return user


@pytest.fixture
def owner(workspace):
    return person("owner@acme.test", workspace=workspace, role=Membership.Role.OWNER)


@pytest.fixture
def admin_user(workspace):
    return person("admin@acme.test", workspace=workspace, role=Membership.Role.ADMIN)


@pytest.fixture
def viewer(workspace):
    return person("viewer@acme.test", workspace=workspace, role=Membership.Role.VIEWER)


@pytest.fixture
def other_owner(other_workspace):
    return person("owner@globex.test", workspace=other_workspace, role=Membership.Role.OWNER)


def last_month_day(now=None):
    first = (now or timezone.now()).replace(day=1, hour=12, minute=0, second=0, microsecond=0)
    return first - timedelta(days=3)  # the 26th–28th of last month, at noon UTC


@pytest.fixture
def usage(workspace, api_key):
    """This month: 250 sd15 images ($1.00), 10 sdxl 1024×1824 at 50 steps ($1.69), 3 upscales
    ($0.09) on the main key and one training ($5.00) on a second key: $7.78 in all. Last month:
    100 sd15 images ($0.40) and 2 captionings ($0.03): $0.43."""
    now = timezone.now().replace(microsecond=0)
    second_key = api_key_create(workspace=workspace, name="batch jobs").api_key
    ingest(workspace, api_key, [
        event(occurred_at=now.isoformat(), quantity=250),
        event(occurred_at=now.isoformat(), quantity=10, model="sdxl", steps=50, width=1024, height=1824),
        event(occurred_at=now.isoformat(), feature="upscaling", quantity=3, model=..., steps=..., width=..., height=...),
    ])  # fmt: skip
    ingest(workspace, second_key, [
        event(occurred_at=now.isoformat(), feature="training", model=..., steps=..., width=..., height=...),
    ])  # fmt: skip
    earlier = last_month_day(now)
    ingest(workspace, api_key, [
        event(occurred_at=earlier.isoformat(), quantity=100),
        event(occurred_at=earlier.isoformat(), feature="captioning", model=..., steps=..., width=..., height=..., quantity=2),
    ])  # fmt: skip
    return {"this_month": "7.78", "last_month": "0.43", "second_key": second_key}


# --- The browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium():
    """Debian's Chromium driven by Playwright (never `playwright install`: no downloads here)."""
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        message = f"{CHROMIUM} is missing: apt-get install chromium chromium-driver (.ci/run does)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()
    playwright.stop()


class ConsoleErrors(list):
    """Console errors and uncaught exceptions of a page; a test ends with none (quality bar)."""


@pytest.fixture
def browser_context(chromium):
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(15_000)
    yield context
    context.close()


@pytest.fixture
def page(browser_context, live_server):
    page = browser_context.new_page()
    errors = ConsoleErrors()
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    page.console_errors = errors
    page.base_url = live_server.url
    yield page
    assert not errors, f"console errors: {errors}"


def sign_in(page, email: str, password: str = PASSWORD) -> None:
    page.goto(page.base_url + "/login/")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/login/" not in url)


# --- Every signed-in page, with content in each table (the accessibility and responsive tests) ----


@pytest.fixture
def every_page(workspace, usage, local_stripe):
    """The signed-in pages: test_browser's list, a budget's edit page, a closed statement (its
    charge failed: no card) and its print view; with a revoked key, in the faint colour."""
    from billing.close import statement_close
    from billing.models import Statement
    from billing.payments import statement_charge
    from budgets.models import Budget
    from dashboard.selectors.statements import scheduled_close
    from tests.dashboard.test_browser import SCREENSHOT_PAGES
    from usage.services import events_ingest
    from workspaces.services import api_key_revoke

    before_last = (last_month_day().date().replace(day=1) - timedelta(days=1)).replace(day=1)
    occurred = datetime.combine(before_last.replace(day=15), time(12, 0), tzinfo=dt_timezone.utc)
    events_ingest(workspace=workspace, api_key=usage["second_key"], now=occurred + timedelta(minutes=1), raw_events=[
        event(occurred_at=occurred.isoformat(), feature="training", model=..., steps=..., width=..., height=...),
    ])  # fmt: skip
    statement, _ = statement_close(workspace, before_last, now=scheduled_close(before_last))
    statement_charge(statement)
    assert Statement.objects.get(pk=statement.pk).status == Statement.Status.PAYMENT_FAILED
    budget = Budget.objects.create(workspace=workspace, amount=Decimal("20"), thresholds=[50, 80, 100])
    api_key_revoke(api_key=api_key_create(workspace=workspace, name="old laptop").api_key)
    return [*SCREENSHOT_PAGES,
            ("budget-edit", f"/budgets/{budget.pk}/?workspace=acme"),
            ("statement", f"/statements/{statement.pk}/?workspace=acme"),
            ("statement-print", f"/statements/{statement.pk}/print/?workspace=acme")]  # fmt: skip

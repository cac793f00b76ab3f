"""Every empty state says what comes next (issue 16, part 5): each page of a brand-new workspace,
as its owner and as a viewer. Where the person can act, a link takes them there (owners and
admins: create a key, set a budget, add an endpoint, add a card, buy credits); a viewer is told who
can, and gets no link to a form they do not have. Links anyone may follow (a statement preview,
clearing filters) are there for both."""

from __future__ import annotations

import html
from dataclasses import dataclass

import pytest

from tests.dashboard.conftest import person

pytestmark = pytest.mark.django_db

KEYS = "/keys/?workspace=acme#create-title"  # where no usage yet leads an owner
PREVIEW = "/statements/preview/?workspace=acme"


@dataclass(frozen=True)
class EmptyState:
    path: str
    says: str  # to everyone
    action: str = ""  # the href of the owners' and admins' link
    owner_says: str = ""  # the link's text and what follows it, for owners and admins
    viewer_says: str = ""  # who can do it, to a viewer
    link: str = ""  # a link anyone may follow: `<a href="…">text</a>`


NO_USAGE = "Usage appears here as your servers report it with an API key"
EMPTY_STATES = [
    EmptyState("/", "No monthly budget yet.", "/budgets/?workspace=acme#new-budget-title",
               "Set one</a> to get an e-mail before spend surprises you.", "Owners and admins set one"),
    EmptyState("/", "comes once the month is over", link=f'<a href="{PREVIEW}">See '),
    EmptyState("/usage/", f"No events this month yet. {NO_USAGE}", KEYS, "create a key</a>, then send a first event",
               "which an owner or admin of Acme creates"),
    EmptyState("/usage/rollups/", f"No usage this month yet. {NO_USAGE}", KEYS, "create a key</a>",
               "which an owner or admin of Acme creates"),
    EmptyState("/usage/?feature=pixelate", "No events match these filters",
               link='<a href="/usage/?workspace=acme">clear the filters</a>'),
    EmptyState("/usage/rollups/?model=sdxl", "No usage matches these filters",
               link='<a href="/usage/rollups/?workspace=acme">clear the filters</a>'),
    EmptyState("/statements/", "No closed month yet.", link=f'<a href="{PREVIEW}">See '),
    EmptyState("/statements/preview/", f"No usage this month yet. {NO_USAGE}", KEYS, "create a key</a>",
               "which an owner or admin of Acme creates"),
    EmptyState("/budgets/", "No budget yet.", "#new-budget-title", "Set one</a> to get an e-mail before spend surprises you",
               "Owners and admins create and change budgets."),
    EmptyState("/budgets/", "No alert yet: one is sent, and listed here, when this month's spend reaches a budget's threshold."),
    EmptyState("/events/", "No endpoints yet: events are kept here and can be polled", "#add-endpoint-title",
               "Add an endpoint</a> to receive each one as a signed POST.", "Owners and admins add and delete endpoints"),
    EmptyState("/events/", "No events yet: billing publishes one when a budget's threshold is crossed",
               "#add-endpoint-title", "Add a webhook endpoint</a> to receive them as they happen."),
    EmptyState("/events/?type=payment.failed", "No payment.failed event yet.",
               link='<a href="/events/?workspace=acme">Show every type</a>'),
    EmptyState("/keys/", "No keys yet: your servers report usage with one.", "#create-title",
               "Create a key</a> below; its secret is shown once.", "Owners and admins create and revoke keys."),
    EmptyState("/payment/", "No card yet: statements cannot be charged until one is added.", "#card-title",
               "Add one below</a>.", "Owners and admins add or replace the card."),
    EmptyState("/credits/", "No credits yet: prepaid credits pay your statements' charges before the card does.",
               "#buy-title", "Buy some</a> above, from $5.00, with the card on the Payment page",
               "Owners and admins buy them, with the card on file."),
    EmptyState("/credits/", "Nothing yet: every purchase, grant, expiry and use of credits by a statement is listed here."),
]  # fmt: skip
OTHER_PAGES = ["/members/", "/billing-details/"]  # a workspace always has a member; the details are a form


@pytest.fixture
def payments(settings):
    """Stripe configured (the payment page has its card form only then); nothing calls it here."""
    settings.STRIPE_SECRET_KEY = "sk_test_empty"
    settings.STRIPE_PUBLISHABLE_KEY = "pk_test_empty"


def page_text(client, path: str) -> str:
    """The page's HTML, entities decoded (`&amp;` in links, `&#x27;` in text)."""
    response = client.get(path)
    assert response.status_code == 200, path
    return html.unescape(response.content.decode())


def test_every_page_of_a_new_workspace_tells_its_owner_what_to_do_next(client, owner, payments):
    client.force_login(owner)
    for path in OTHER_PAGES:
        page_text(client, path)
    for state in EMPTY_STATES:
        page = page_text(client, state.path)
        assert state.says in page, (state.path, state.says)
        if state.action:
            assert f'<a href="{state.action}">{state.owner_says}' in page, (state.path, state.action)
            assert not state.viewer_says or state.viewer_says not in page, (state.path, state.viewer_says)
        assert state.link in page, (state.path, state.link)


def test_a_viewer_is_told_who_can_and_gets_no_link_to_a_form_they_do_not_have(client, workspace, viewer, payments):
    client.force_login(viewer)
    for path in OTHER_PAGES:
        page_text(client, path)
    for state in EMPTY_STATES:
        page = page_text(client, state.path)
        assert state.says in page, (state.path, state.says)
        assert state.viewer_says in page, (state.path, state.viewer_says)
        if state.action:
            assert f'href="{state.action}"' not in page, (state.path, state.action)
        assert state.link in page, (state.path, state.link)


def test_an_admin_gets_the_owners_links(client, workspace, payments):
    client.force_login(person("admin@acme.test", workspace=workspace, role="admin"))
    for state in EMPTY_STATES:
        if state.action:
            assert f'<a href="{state.action}">{state.owner_says}' in page_text(client, state.path), state


def test_an_empty_period_on_the_overview_offers_a_longer_one(client, owner, usage):
    client.force_login(owner)
    page = page_text(client, "/?workspace=acme&period=custom&start=2025-01-01&end=2025-01-31")
    assert page.count("No usage in this period: choose another above, e.g.") == 6  # every chart
    assert '<a href="/?workspace=acme&period=last_12">the last 12 months</a>' in page
    longest = page_text(client, "/?workspace=acme&period=last_12")
    assert "No usage in this period" not in longest  # the usage fixture's months have usage


def test_the_staff_page_of_a_quiet_month_says_what_comes(client, db):
    client.force_login(person("staff@meterboard.test", staff=True))
    page = page_text(client, "/staff/")
    for says in (
        "No usage this month yet: workspaces are listed here as their events arrive.",
        "No close has run yet. The scheduled one runs on day",
        "No payment is failing.",
        "No workspace is over a budget this month.",
    ):
        assert says in page, says

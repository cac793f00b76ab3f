"""The test-mode banner and the payment page's test cards (issue 14, part 4): shown on every page
when payments go to a local Stripe simulator or to Stripe's test mode, never with a live key or
without payments. No request reaches Stripe here: the workspace has no card to look up."""

from __future__ import annotations

import pytest

from billing.stripe_api import StripeMode, stripe_mode
from tests.dashboard.conftest import person
from workspaces.models import Membership

SIMULATOR = "payments go to a local Stripe simulator, no money moves"
STRIPE_TEST = "Stripe test keys: payments are simulated by Stripe, no money moves"

CASES = [
    # key, API base, mode, banner text (None: no banner)
    ("", "https://api.stripe.com", StripeMode.OFF, None),
    ("sk_live_51abc", "https://api.stripe.com", StripeMode.LIVE, None),
    ("rk_live_51abc", "https://api.stripe.com", StripeMode.LIVE, None),
    ("sk_live_51abc", "http://127.0.0.1:8420", StripeMode.LIVE, None),  # a live key behind a proxy is still live
    ("sk_51abc", "https://api.stripe.com", StripeMode.LIVE, None),  # not saying it is a test key: assume money
    ("sk_test_51abc", "https://api.stripe.com", StripeMode.TEST, STRIPE_TEST),
    ("rk_test_51abc", "https://API.Stripe.com/", StripeMode.TEST, STRIPE_TEST),
    ("sk_test_51abc", "https://stripe.com.example.net", StripeMode.SIMULATOR, SIMULATOR),
    ("sk_test_meterboard_demo", "http://127.0.0.1:8420", StripeMode.SIMULATOR, SIMULATOR),
]


@pytest.fixture
def owner_client(client, workspace):
    client.force_login(person("owner@acme.test", workspace=workspace, role=Membership.Role.OWNER))
    return client


@pytest.mark.parametrize(("key", "api_base", "mode", "banner"), CASES)
def test_the_banner_says_test_mode_on_every_page_unless_money_moves(owner_client, settings, key, api_base, mode, banner):
    settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE = key, api_base
    settings.STRIPE_PUBLISHABLE_KEY = "pk_test_x" if key else ""

    assert stripe_mode() == mode
    for path in ("/?workspace=acme", "/statements/?workspace=acme", "/payment/?workspace=acme", "/budgets/?workspace=acme"):
        page = owner_client.get(path).content.decode()
        assert ('id="test-mode-banner"' in page) == (banner is not None), path
        if banner:
            assert banner in page, path
    # Also before signing in.
    owner_client.logout()
    assert ('id="test-mode-banner"' in owner_client.get("/login/").content.decode()) == (banner is not None)


@pytest.mark.parametrize(("key", "api_base", "mode", "banner"), CASES)
def test_the_payment_page_lists_test_cards_in_test_mode_only(owner_client, settings, key, api_base, mode, banner):
    settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE = key, api_base
    settings.STRIPE_PUBLISHABLE_KEY = "pk_test_x" if key else ""

    page = owner_client.get("/payment/?workspace=acme").content.decode()

    shown = banner is not None
    assert ('id="test-cards"' in page) == shown
    for number in ("4242424242424242", "4000000000000341", "4000000000000002"):
        assert (number in page) == shown

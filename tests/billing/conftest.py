"""Billing fixtures: a real localstripe server for the payment tests."""

from __future__ import annotations

import pytest

from tests.stripe_server import SECRET_KEY, LocalStripe


@pytest.fixture(scope="session")
def localstripe_server(tmp_path_factory):
    """One localstripe for the session, started on a free port and stopped at the end."""
    server = LocalStripe(tmp_path_factory.mktemp("localstripe") / "localstripe.log").start()
    yield server
    server.stop()


@pytest.fixture
def local_stripe(localstripe_server, settings):
    """localstripe emptied for this test, with the app's Stripe settings pointing at it."""
    localstripe_server.reset()
    settings.STRIPE_API_BASE = localstripe_server.url
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    return localstripe_server

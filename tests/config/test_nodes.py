"""Two web nodes (issue 13): real gunicorn processes on the test database and Redis. What one
process changes takes effect on every node within the documented bound: a revoked API key is
refused by both within a second (KEY_CACHE_SECONDS), and a new price-book version prices on both
within a second (pricing.selectors.FRESHNESS_SECONDS), because neither cache lives longer; and a
person signed in through one node is signed in on the other, whose CSRF check accepts the first's
token."""

from __future__ import annotations

import http.client
import json
import os
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.utils import timezone

from bench.server import Gunicorn
from pricing.models import PriceBook
from pricing.selectors import FRESHNESS_SECONDS
from tests.budgets.conftest import database_url_for_tests
from workspaces.services import KEY_CACHE_SECONDS, api_key_create, api_key_revoke, workspace_create

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
SLACK = 0.5  # seconds: a request in flight, the polling interval


@pytest.fixture
def nodes(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        "DATABASE_URL": database_url_for_tests(),
        "REDIS_URL": settings.REDIS_URL,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    started = [Gunicorn(env=env, workers=1, log_path=tmp_path / f"node-{n}.log", ready_path="/healthz") for n in (1, 2)]
    try:
        for node in started:
            node.start()
        yield started
    finally:
        for node in started:
            node.stop()


def call(node: Gunicorn, method: str, path: str, secret: str, body: dict | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def seconds_until(condition, limit: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    pytest.fail(f"not within {limit:.1f} s")


QUOTE = {"feature": "generation", "model": "sd15", "steps": 30, "width": 512, "height": 512}


def test_a_revoked_key_is_refused_by_every_node_within_a_second(nodes):
    assert KEY_CACHE_SECONDS <= 1  # the documented bound (README, docs/scaling.md)
    workspace = workspace_create(slug="nodes", owner_email="nodes@test.example")
    issued = api_key_create(workspace=workspace, name="both")
    for node in nodes:
        assert call(node, "POST", "/api/v1/quote", issued.secret, QUOTE)[0] == 200  # cached on each now
    api_key_revoke(api_key=issued.api_key)
    for node in nodes:
        waited = seconds_until(lambda node=node: call(node, "POST", "/api/v1/quote", issued.secret, QUOTE)[0] == 401,
                               KEY_CACHE_SECONDS + SLACK)  # fmt: skip
        assert waited <= KEY_CACHE_SECONDS + SLACK


def test_a_new_price_book_prices_on_every_node_within_a_second(nodes):
    assert FRESHNESS_SECONDS <= 1  # the documented bound
    workspace = workspace_create(slug="prices", owner_email="prices@test.example")
    secret = api_key_create(workspace=workspace, name="both").secret
    before = [call(node, "POST", "/api/v1/quote", secret, QUOTE)[1] for node in nodes]
    assert {answer["unit_price"] for answer in before} == {"0.004000"}
    v1 = PriceBook.objects.order_by("-version").first()
    newer = PriceBook.objects.create(version=v1.version + 1, effective_from=timezone.now() - timedelta(seconds=1))
    for rate in v1.rates.all():
        rate.pk, rate.price_book = None, newer
        if (rate.feature, rate.model) == ("generation", "sd15"):
            rate.unit_price = Decimal("0.005")
        rate.save()
    for node in nodes:
        waited = seconds_until(
            lambda node=node: call(node, "POST", "/api/v1/quote", secret, QUOTE)[1].get("unit_price") == "0.005000",
            FRESHNESS_SECONDS + SLACK,
        )
        assert waited <= FRESHNESS_SECONDS + SLACK


def test_a_person_signed_in_through_one_node_is_signed_in_on_every_node_and_csrf_holds(nodes):
    """Behind a load balancer a person's requests land on any node: the session (in the database)
    and the CSRF token (a cookie, signed with the shared SECRET_KEY) are valid on all of them."""
    import re

    import requests

    from budgets.models import Budget
    from tests.dashboard.conftest import PASSWORD, person
    from workspaces.models import Membership

    workspace = workspace_create(slug="lb", owner_email="lb-owner@test.example", name="Balanced Inc")
    owner = person("lb-admin@test.example", workspace=workspace, role=Membership.Role.OWNER)
    first, second = (f"http://127.0.0.1:{node.port}" for node in nodes)
    browser = requests.Session()

    def form_token(page: requests.Response) -> str:
        assert page.status_code == 200, page.status_code
        return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]

    token = form_token(browser.get(f"{first}/login/", timeout=10))
    signed_in = browser.post(f"{second}/login/", data={"username": owner.email, "password": PASSWORD,
                             "csrfmiddlewaretoken": token}, allow_redirects=False, timeout=10)  # fmt: skip
    assert signed_in.status_code == 302, signed_in.text[:500]
    assert "Balanced Inc" in browser.get(f"{first}/", timeout=10).text
    token = form_token(browser.get(f"{first}/budgets/", timeout=10))
    budget = {"name": "Cap", "amount": "25", "thresholds": "50, 100", "email": "on", "csrfmiddlewaretoken": token}
    assert browser.post(f"{second}/budgets/new/", data={**budget, "csrfmiddlewaretoken": "forged"},
                        timeout=10).status_code == 403  # fmt: skip
    assert browser.post(f"{second}/budgets/new/", data=budget, timeout=10).status_code == 200
    assert Budget.objects.get(workspace=workspace).amount == Decimal("25")

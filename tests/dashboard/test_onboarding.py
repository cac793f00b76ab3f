"""The overview's "Get started" checklist (issue 16, part 1), server side: each step's state comes
from the workspace, a key created from it is shown once with the first request filled in, the
requests it offers really report an event, and the live panel's poll is scoped to the caller's
workspace. The browser test (first event seen live) is in test_browser.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from decimal import Decimal
from html import unescape as html_unescape

import pytest
from django.utils import timezone

from billing.models import StripeCustomer
from budgets.models import Budget
from tests.conftest import event, ingest
from tests.dashboard.conftest import person
from usage.models import UsageEvent
from workspaces.models import ApiKey, Membership
from workspaces.services import api_key_create, api_key_revoke

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner(workspace):
    return person("owner@acme.test", workspace=workspace, role=Membership.Role.OWNER)


def steps_of(html: str) -> dict[str, bool]:
    """Each step of the served checklist: done or not, as the page marks it (class and text)."""
    found = re.findall(
        r'<li class="step( done)?" data-step="(\w+)">\s*<h3><span class="step-state">(Done|To do)</span>',
        html,
    )
    assert found, "no checklist on the page"
    for done, _, text in found:
        assert bool(done) == (text == "Done")
    return {name: bool(done) for done, name, _ in found}


def test_a_new_workspace_gets_started_instead_of_empty_charts(client, owner, workspace):
    client.force_login(owner)
    html = client.get("/").content.decode()
    assert "Get started" in html
    assert steps_of(html) == {"key": False, "events": False, "budget": False, "card": False}
    assert 'id="chart-daily"' not in html and "plotly.min.js" not in html, "no empty charts"
    assert "js/onboarding.js" in html and "<script>" not in html
    assert 'action="/onboarding/key/?workspace=acme"' in html
    assert "Bearer YOUR_API_KEY" in html, "without a new key, a placeholder"


def test_each_step_ticks_itself_and_the_list_goes_when_all_are_done(client, owner, workspace):
    client.force_login(owner)
    key = api_key_create(workspace=workspace, name="prod").api_key
    assert steps_of(client.get("/").content.decode()) == {
        "key": True,
        "events": False,
        "budget": False,
        "card": False,
    }
    ingest(workspace, key, [event(occurred_at=timezone.now().replace(microsecond=0).isoformat())])
    html = client.get("/").content.decode()
    assert steps_of(html) == {"key": True, "events": True, "budget": False, "card": False}
    assert 'id="chart-daily"' in html, "with events, the charts are back (the open steps above them)"
    Budget.objects.create(workspace=workspace, amount=Decimal("50"))
    assert steps_of(client.get("/").content.decode())["budget"] is True
    StripeCustomer.objects.create(workspace=workspace, customer_id="cus_onboard", default_payment_method="")
    assert steps_of(client.get("/").content.decode())["card"] is False, "a customer without a card is no card"
    StripeCustomer.objects.filter(workspace=workspace).update(default_payment_method="pm_card_visa")
    html = client.get("/").content.decode()
    assert "Get started" not in html and "js/onboarding.js" not in html
    # A revoked key is no key: the list comes back for that step.
    api_key_revoke(api_key=key)
    assert steps_of(client.get("/").content.decode()) == {
        "key": False,
        "events": True,
        "budget": True,
        "card": True,
    }


def test_a_key_created_from_the_checklist_is_shown_once_and_filled_in(client, owner, workspace):
    client.force_login(owner)
    response = client.post("/onboarding/key/?workspace=acme", {"name": "my laptop"})
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    html = response.content.decode()
    secret = re.search(r'id="new-secret" type="text" value="(mbk_[^"]+)"', html).group(1)
    key = ApiKey.objects.get(workspace=workspace, name="my laptop")
    assert secret not in (key.secret_hash, key.display_prefix)
    assert html.count(f"Bearer {secret}") == 2  # curl and HTTP
    assert f"api_key=&quot;{secret}&quot;" in html  # the Python client (escaped in the page)
    assert "YOUR_API_KEY" not in html
    assert steps_of(html)["key"] is True
    again = client.get("/").content.decode()
    assert secret not in again and "YOUR_API_KEY" in again, "the secret is shown once"
    # With no name, a default one; a name too long is a 400 with the field's error, nothing created.
    assert client.post("/onboarding/key/?workspace=acme", {}).status_code == 200
    assert ApiKey.objects.filter(workspace=workspace, name="First key").exists()
    refused = client.post("/onboarding/key/?workspace=acme", {"name": "x" * 101})
    assert refused.status_code == 400 and "at most 100 characters" in refused.content.decode()
    assert ApiKey.objects.filter(workspace=workspace).count() == 2


def test_viewers_and_other_workspaces_cannot_create_keys_from_it(client, workspace, other_workspace):
    viewer = person("viewer@acme.test", workspace=workspace, role=Membership.Role.VIEWER)
    client.force_login(viewer)
    html = client.get("/").content.decode()
    assert steps_of(html)["key"] is False and "onboarding-key-name" not in html
    assert "An owner or admin of Acme creates keys." in html
    assert client.post("/onboarding/key/?workspace=acme", {"name": "sneaky"}).status_code == 403
    assert client.post("/onboarding/key/?workspace=globex", {"name": "sneaky"}).status_code == 404
    assert not ApiKey.objects.filter(name="sneaky").exists()


def test_the_live_panel_poll_answers_for_the_callers_workspace_only(
    client, owner, workspace, other_workspace, api_key
):
    other_key = api_key_create(workspace=other_workspace, name="globex prod").api_key
    now = timezone.now().replace(microsecond=0).isoformat()
    ingest(other_workspace, other_key, [event(event_id="globex-secret-event", occurred_at=now)])
    client.force_login(owner)
    empty = client.get("/onboarding/events.json?workspace=acme")
    assert empty.status_code == 200 and empty["Cache-Control"] == "no-store"
    assert empty.json() == {
        "steps": {"key": True, "events": False, "budget": False, "card": False},
        "events": [],
    }
    ingest(workspace, api_key, [event(event_id="acme-first", occurred_at=now, quantity=3)])
    answer = client.get("/onboarding/events.json?workspace=acme").json()
    assert answer["steps"]["events"] is True
    assert [
        (e["event_id"], e["quantity"], e["amount"], e["feature"], e["model"]) for e in answer["events"]
    ] == [("acme-first", 3, "0.012000", "generation", "sd15")]
    # Another workspace's slug is a 404 (as every page), and its events never show in ours.
    assert client.get("/onboarding/events.json?workspace=globex").status_code == 404
    assert "globex-secret-event" not in client.get("/onboarding/events.json").content.decode()
    client.logout()
    assert client.get("/onboarding/events.json?workspace=acme").status_code == 302  # to the sign-in


@pytest.mark.django_db(transaction=True)
def test_the_offered_requests_really_report_an_event(client, owner, workspace, live_server, settings):
    """The curl command (run by bash), the Python client's code (run by Python) and the HTTP request
    (sent as written) each store one event with the key the checklist just created."""
    settings.SITE_URL = live_server.url
    client.force_login(owner)
    html = client.post("/onboarding/key/?workspace=acme", {"name": "snippets"}).content.decode()

    def snippet(name: str) -> str:
        text = re.search(rf'<pre id="request-{name}" tabindex="0">(.*?)</pre>', html, re.S).group(1)
        return html_unescape(text)

    curl = subprocess.run(["bash", "-c", snippet("curl")], capture_output=True, text=True, timeout=30)
    assert curl.returncode == 0, curl.stderr
    assert json.loads(curl.stdout)["results"][0]["status"] == "accepted"
    python = subprocess.run(
        [sys.executable, "-c", snippet("python")], capture_output=True, text=True, timeout=60
    )
    assert python.returncode == 0, python.stderr
    head, body = snippet("http").split("\n\n", 1)
    headers = dict(line.split(": ", 1) for line in head.splitlines()[1:])
    sent = client.generic("POST", "/api/v1/events", body, content_type=headers["Content-Type"],
                          HTTP_AUTHORIZATION=headers["Authorization"])  # fmt: skip
    assert sent.status_code in (200, 201, 207), sent.content
    assert UsageEvent.objects.filter(workspace=workspace).count() == 3

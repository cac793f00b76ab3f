"""Signed-in pages: the overview shows the month from the rollups, scoped to the user's workspaces."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.utils import timezone

from tests.conftest import event, post_events


def test_the_overview_needs_a_sign_in(client, db):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_sign_in_then_see_month_to_date_spend(client, api, workspace):
    now = timezone.now().replace(microsecond=0)
    post_events(api, [event(occurred_at=now.isoformat(), quantity=250)])  # 250 × 0.004 = $1.00
    user = get_user_model().objects.get(username="owner@acme.test")
    user.set_password("correct horse battery")
    user.save()
    response = client.post("/login/", {"username": "owner@acme.test", "password": "correct horse battery"})
    assert response.status_code == 302
    page = client.get("/").content.decode()
    assert "Acme" in page
    assert "$1.00" in page
    assert "generation" in page


def test_a_wrong_password_says_so(client, workspace):
    page = client.post("/login/", {"username": "owner@acme.test", "password": "nope"}).content.decode()
    assert "do not match" in page


def test_another_workspace_cannot_be_opened_by_url(client, workspace, other_workspace):
    client.force_login(get_user_model().objects.get(username="owner@acme.test"))
    assert client.get("/", {"workspace": "globex"}).status_code == 404
    assert client.get("/", {"workspace": "acme"}).status_code == 200

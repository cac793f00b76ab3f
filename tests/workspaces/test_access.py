"""Who may call what: API keys (Bearer, scopes, revocation), sessions, and workspace isolation."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from tests.conftest import client_with, event, post_events
from usage.models import UsageEvent
from workspaces.models import ApiKey, Membership
from workspaces.services import api_key_authenticate, api_key_create, api_key_revoke

QUOTE = {"feature": "upscaling"}


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer ", "Bearer mbk_nope_nope", "Bearer not-a-key", "Token abc", "Basic Zm9vOmJhcg=="],
)
def test_missing_or_unknown_keys_get_401(db, workspace, header):
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)
    for method, path, body in (("post", "/api/v1/events", event()), ("post", "/api/v1/quote", QUOTE), ("get", "/api/v1/usage", None)):
        response = getattr(client, method)(path, body, format="json")
        assert response.status_code == 401, (path, header, response.content)
        assert response["WWW-Authenticate"].startswith("Bearer")
    assert not UsageEvent.objects.exists()


def test_a_right_prefix_with_a_wrong_secret_is_401(workspace, issued_key):
    forged = issued_key.secret[:-4] + "AAAA"
    assert client_with(forged).post("/api/v1/quote", QUOTE, format="json").status_code == 401


def test_a_revoked_key_gets_401_from_the_next_request(workspace, issued_key, api):
    assert api.post("/api/v1/quote", QUOTE, format="json").status_code == 200
    api_key_revoke(api_key=issued_key.api_key)
    response = api.post("/api/v1/events", event(), format="json")
    assert response.status_code == 401
    assert response.json()["detail"] == "Unknown or revoked API key."
    assert not UsageEvent.objects.exists()


def test_the_secret_is_never_stored_and_only_its_hash_matches(workspace, issued_key):
    row = ApiKey.objects.get()
    assert issued_key.secret not in {row.secret_hash, row.prefix, row.name}
    assert issued_key.secret.startswith(f"mbk_{row.prefix}_")
    assert api_key_authenticate(issued_key.secret) == row
    assert api_key_authenticate(issued_key.secret + "x") is None


def test_last_used_is_recorded(workspace, issued_key, api):
    assert ApiKey.objects.get().last_used_at is None
    api.post("/api/v1/quote", QUOTE, format="json")
    assert ApiKey.objects.get().last_used_at is not None


@pytest.mark.parametrize(
    "scopes, method, path, body, status",
    [
        (["usage:write"], "post", "/api/v1/events", event(), 200),
        (["usage:write"], "post", "/api/v1/quote", QUOTE, 200),
        (["usage:write"], "get", "/api/v1/usage", None, 403),
        (["usage:read"], "post", "/api/v1/events", event(), 403),
        (["usage:read"], "post", "/api/v1/quote", QUOTE, 200),
        (["usage:read"], "get", "/api/v1/usage", None, 200),
        (["budgets:write", "billing:write"], "post", "/api/v1/events", event(), 403),
        (["budgets:write", "billing:write"], "post", "/api/v1/quote", QUOTE, 403),
        (["budgets:write", "billing:write"], "get", "/api/v1/usage", None, 403),
    ],
)
def test_a_key_without_the_scope_gets_403(workspace, scopes, method, path, body, status):
    client = client_with(api_key_create(workspace=workspace, name="narrow", scopes=scopes).secret)
    response = getattr(client, method)(path, body, format="json")
    assert response.status_code == status, response.content
    if status == 403:
        assert "scope" in response.json()["detail"]


def test_a_key_writes_and_reads_only_its_own_workspace(api, other_api, workspace, other_workspace):
    post_events(api, [event(event_id="a-1", quantity=2)])
    post_events(other_api, [event(event_id="b-1", quantity=7, feature="training", model=..., steps=..., width=..., height=...)])
    # ?workspace= is for people; a key's workspace is fixed by the key.
    a_usage = api.get("/api/v1/usage", {"start": "2026-11-01", "end": "2026-11-30", "group_by": "feature", "workspace": "globex"}).json()
    b_usage = other_api.get("/api/v1/usage", {"start": "2026-11-01", "end": "2026-11-30", "group_by": "feature"}).json()
    assert a_usage["workspace"] == "acme"
    assert a_usage["rows"] == [{"feature": "generation", "quantity": 2, "amount": "0.008000"}]
    assert b_usage["rows"] == [{"feature": "training", "quantity": 7, "amount": "35.000000"}]
    assert UsageEvent.objects.get(event_id="a-1").workspace == workspace
    assert UsageEvent.objects.get(event_id="b-1").workspace == other_workspace


@pytest.fixture
def member(workspace):
    user = get_user_model().objects.create_user("viewer@acme.test", "viewer@acme.test", "pw-123456!")
    Membership.objects.create(workspace=workspace, user=user, role=Membership.Role.VIEWER)
    client = APIClient()
    client.force_login(user)
    return client


def test_a_signed_in_member_reads_usage_of_their_workspace(member, api, workspace):
    post_events(api, [event(quantity=3)])
    response = member.get("/api/v1/usage", {"start": "2026-11-01", "end": "2026-11-30"})
    assert response.status_code == 200
    assert response.json()["total"] == "0.012000"


def test_a_member_cannot_read_another_workspace_by_naming_it(member, other_api, other_workspace):
    post_events(other_api, [event()])
    response = member.get("/api/v1/usage", {"workspace": "globex"})
    assert response.status_code == 404
    missing = member.get("/api/v1/usage", {"workspace": "no-such-workspace"})
    assert missing.status_code == 404
    assert response.json()["detail"].replace("globex", "X") == missing.json()["detail"].replace("no-such-workspace", "X")


def test_a_person_in_several_workspaces_must_name_one(member, other_workspace):
    user = get_user_model().objects.get(username="viewer@acme.test")
    Membership.objects.create(workspace=other_workspace, user=user)
    assert member.get("/api/v1/usage").status_code == 400
    assert member.get("/api/v1/usage", {"workspace": "globex"}).json()["workspace"] == "globex"


def test_sessions_cannot_post_events(member):
    """Reporting usage is for the generation servers' keys, not for people."""
    response = member.post("/api/v1/events", event(), format="json")
    assert response.status_code == 401
    assert not UsageEvent.objects.exists()


def test_staff_read_any_workspace(db, other_api, other_workspace):
    post_events(other_api, [event()])
    staff = get_user_model().objects.create_user("staff@meterboard.test", "staff@meterboard.test", "pw", is_staff=True)
    client = APIClient()
    client.force_login(staff)
    assert client.get("/api/v1/usage", {"workspace": "globex"}).json()["total"] == "0.004000"

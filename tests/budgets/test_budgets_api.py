"""The budgets API: shapes, per-field errors, webhook URL checks, scopes and workspace isolation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.db.models import F
from rest_framework.test import APIClient

from budgets.delivery import delivery_attempt
from budgets.models import Alert, AlertDelivery, Budget, WebhookEndpoint
from tests.budgets.conftest import spend_events
from tests.conftest import client_with, post_events
from workspaces.models import Membership, Scope
from workspaces.services import api_key_create

PUBLIC_HOOK = "https://93.184.215.14/meterboard"  # a public address: no DNS needed in the test
CREATE = {
    "amount": "100.00",
    "thresholds": [50, 80, 100],
    "forecast_alerts": True,
    "hard_limit": False,
    "api_key": None,
    "email": True,
    "webhooks": [{"url": PUBLIC_HOOK}],
}


def session_client(workspace, role: str) -> APIClient:
    user = get_user_model().objects.create_user(f"{role}@acme.test", f"{role}@acme.test", "pw")
    Membership.objects.create(workspace=workspace, user=user, role=role)
    client = APIClient()
    client.force_login(user)
    return client


def create(client, **overrides) -> dict:
    response = client.post("/api/v1/budgets", {**CREATE, **overrides}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_create_answers_the_budget_with_each_webhook_secret_once(api):
    body = create(api)
    [hook] = body["webhooks"]
    assert set(hook) == {"id", "url", "secret"} and hook["url"] == PUBLIC_HOOK
    assert hook["secret"].startswith("whsec_") and len(hook["secret"]) > 40
    assert body["amount"] == "100.000000" and body["thresholds"] == [50, 80, 100]
    assert (body["forecast_alerts"], body["hard_limit"], body["email"], body["api_key"]) == (True, False, True, None)
    assert (body["spend"], body["period"]) == ("0.000000", body["period"])
    assert WebhookEndpoint.objects.get().secret == hook["secret"]
    # Never again: not in the detail, not in the list.
    detail = api.get(f"/api/v1/budgets/{body['id']}").json()
    assert detail["webhooks"] == [{"id": hook["id"], "url": PUBLIC_HOOK}]
    assert api.get("/api/v1/budgets").json() == [detail]


def test_only_the_amount_is_required(api):
    response = api.post("/api/v1/budgets", {"amount": "25"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert (body["thresholds"], body["forecast_alerts"], body["hard_limit"], body["email"], body["webhooks"]) == (
        [50, 80, 100], True, False, True, [],
    )


@pytest.mark.parametrize(
    "change, errors",
    [
        ({"amount": None}, {"amount": ["This field may not be null."]}),
        ({"amount": "-5"}, {"amount": ["Ensure this value is greater than or equal to 0.01."]}),
        ({"amount": "ten"}, {"amount": ["A valid number is required."]}),
        ({"amount": "1.0000001"}, {"amount": ["Ensure that there are no more than 6 decimal places."]}),
        ({"thresholds": [50, 50]}, {"thresholds": ["Each threshold once."]}),
        ({"thresholds": [0, 80]}, {"thresholds": {"0": ["Ensure this value is greater than or equal to 1."]}}),
        ({"thresholds": "80"}, {"thresholds": ['Expected a list of items but got type "str".']}),
        ({"hard_limit": "maybe"}, {"hard_limit": ["Must be a valid boolean."]}),
        ({"api_key": "mbk_nope"}, {"api_key": ["No API key 'mbk_nope' in this workspace (give its mbk_… prefix)."]}),
        ({"webhooks": [{"url": "ftp://93.184.215.14/x"}]}, {"webhooks": [{"url": ["Must start with https:// (or http://)."]}]}),
        ({"webhooks": [{"url": "https://user:pw@93.184.215.14/"}]},
         {"webhooks": [{"url": ["Must not carry a user name or password; authenticate with the signature."]}]}),
        ({"webhooks": [{}]}, {"webhooks": [{"url": ["This field is required."]}]}),
        ({"threshold": [10]}, {"threshold": ["Unknown field."]}),
    ],
)
def test_bad_input_gets_400_with_errors_per_field(api, change, errors):
    response = api.post("/api/v1/budgets", {**CREATE, **change}, format="json")
    assert response.status_code == 400
    assert response.json() == errors
    assert not Budget.objects.exists()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://10.1.2.3/",
        "https://192.168.0.10/",
        "http://172.16.5.4/",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata: link-local
        "http://[::1]/",
        "http://[fe80::1]/",
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
        "http://0.0.0.0/",
        "http://100.64.0.1/",  # shared address space (CGNAT)
        "http://224.0.0.1/",  # multicast
    ],
)
def test_private_loopback_and_link_local_webhooks_are_refused(api, url):
    response = api.post("/api/v1/budgets", {**CREATE, "webhooks": [{"url": url}]}, format="json")
    assert response.status_code == 400, url
    [message] = response.json()["webhooks"][0]["url"]
    assert "non-public address" in message


def test_an_unresolvable_host_is_refused(api):
    response = api.post("/api/v1/budgets", {**CREATE, "webhooks": [{"url": "https://no-such-host.invalid/"}]}, format="json")
    assert response.json() == {"webhooks": [{"url": ["The host 'no-such-host.invalid' does not resolve."]}]}


def test_private_webhooks_are_allowed_when_the_setting_says_so(api, allow_private):
    assert create(api, webhooks=[{"url": "http://127.0.0.1:9/hook"}])["webhooks"][0]["url"] == "http://127.0.0.1:9/hook"


def test_a_budget_can_be_narrowed_to_one_key_of_the_workspace(api, workspace, api_key, other_workspace):
    body = create(api, api_key=api_key.display_prefix)
    assert (body["api_key"], body["api_key_name"]) == (api_key.display_prefix, "prod servers")
    foreign = api_key_create(workspace=other_workspace, name="theirs").api_key
    response = api.post("/api/v1/budgets", {**CREATE, "api_key": foreign.display_prefix}, format="json")
    assert response.status_code == 400 and "api_key" in response.json()


def test_patch_changes_what_is_sent_and_webhooks_become_the_list_given(api):
    body = create(api, webhooks=[{"url": PUBLIC_HOOK}, {"url": "https://93.184.215.14/second"}])
    first, second = body["webhooks"]
    response = api.patch(
        f"/api/v1/budgets/{body['id']}",
        {"amount": "250.5", "hard_limit": True, "webhooks": [{"id": first["id"], "url": PUBLIC_HOOK},
                                                               {"url": "https://93.184.215.14/third"}]},
        format="json",
    )
    assert response.status_code == 200, response.content
    patched = response.json()
    assert (patched["amount"], patched["hard_limit"], patched["thresholds"]) == ("250.500000", True, [50, 80, 100])
    kept, added = patched["webhooks"]
    assert kept == {"id": first["id"], "url": PUBLIC_HOOK}  # its secret is not shown again
    assert added["secret"].startswith("whsec_") and added["url"].endswith("/third")
    assert not WebhookEndpoint.objects.filter(pk=second["id"]).exists()
    assert WebhookEndpoint.objects.get(pk=first["id"]).secret == first["secret"]

    unknown = api.patch(f"/api/v1/budgets/{body['id']}", {"webhooks": [{"id": 999999, "url": PUBLIC_HOOK}]}, format="json")
    assert unknown.status_code == 400
    assert unknown.json() == {"webhooks": [{"id": ["No webhook 999999 on this budget."]}]}
    assert api.patch(f"/api/v1/budgets/{body['id']}", {"thresholds": [120, 90]}, format="json").json()["thresholds"] == [90, 120]


def test_an_unknown_webhook_id_changes_nothing(api):
    body = create(api)
    response = api.patch(
        f"/api/v1/budgets/{body['id']}",
        {"amount": "5", "webhooks": [{"url": "https://93.184.215.14/new"}, {"id": 999999, "url": PUBLIC_HOOK}]},
        format="json",
    )
    assert response.status_code == 400
    assert response.json() == {"webhooks": [{}, {"id": ["No webhook 999999 on this budget."]}]}
    after = api.get(f"/api/v1/budgets/{body['id']}").json()
    assert after["amount"] == "100.000000" and after["webhooks"] == [{"id": body["webhooks"][0]["id"], "url": PUBLIC_HOOK}]


def test_the_api_keeps_webhooks_by_id_only(api):
    """An entry without an id is a new endpoint, with a new secret, even at a URL the budget has
    (the dashboard's form, which knows only URLs, keeps by URL: tests/dashboard)."""
    body = create(api)
    [old] = body["webhooks"]
    patched = api.patch(f"/api/v1/budgets/{body['id']}", {"webhooks": [{"url": PUBLIC_HOOK}]}, format="json").json()
    [new] = patched["webhooks"]
    assert new["id"] != old["id"] and new["secret"] != old["secret"] and new["url"] == PUBLIC_HOOK
    assert list(WebhookEndpoint.objects.values_list("pk", flat=True)) == [new["id"]]


def test_delete_keeps_the_alert_history(api, workspace):
    body = create(api)
    alert = Alert.objects.create(workspace=workspace, budget_id=body["id"], period="2026-11-01", kind="actual",
                                 threshold=50, budget_amount="100", spend="51")
    assert api.delete(f"/api/v1/budgets/{body['id']}").status_code == 204
    assert not Budget.objects.exists() and not WebhookEndpoint.objects.exists()
    alert.refresh_from_db()
    assert alert.budget_id is None
    assert api.get("/api/v1/alerts").json()[0]["budget"] is None


def test_another_workspaces_budgets_are_not_found(api, other_api):
    theirs = create(other_api)
    for method, path in (("get", ""), ("patch", ""), ("delete", ""), ("post", "/test-alert")):
        response = getattr(api, method)(f"/api/v1/budgets/{theirs['id']}{path}", {"amount": "1"}, format="json")
        assert response.status_code == 404, (method, path)
    assert api.get("/api/v1/budgets").json() == []
    assert Budget.objects.get().amount == 100
    other_api.post(f"/api/v1/budgets/{theirs['id']}/test-alert")
    assert api.get("/api/v1/alerts").json() == []
    assert len(other_api.get("/api/v1/alerts").json()) == 1


def test_writes_need_budgets_write_reads_need_usage_read(workspace):
    reader = client_with(api_key_create(workspace=workspace, name="r", scopes=[Scope.USAGE_READ]).secret)
    writer = client_with(api_key_create(workspace=workspace, name="w", scopes=[Scope.BUDGETS_WRITE]).secret)
    assert reader.post("/api/v1/budgets", CREATE, format="json").status_code == 403
    body = create(writer)
    assert reader.get("/api/v1/budgets").status_code == 200
    assert reader.get("/api/v1/alerts").status_code == 200
    assert reader.get("/api/v1/forecast").status_code == 200
    for method, path in (("patch", ""), ("delete", ""), ("post", "/test-alert")):
        response = getattr(reader, method)(f"/api/v1/budgets/{body['id']}{path}", {"amount": "1"}, format="json")
        assert response.status_code == 403
        assert "budgets:write" in response.json()["detail"]
    assert writer.get("/api/v1/budgets").status_code == 403  # a write-only key reads nothing


def test_sessions_owners_and_admins_write_viewers_read(workspace):
    viewer = session_client(workspace, Membership.Role.VIEWER)
    admin = session_client(workspace, Membership.Role.ADMIN)
    assert viewer.post("/api/v1/budgets", CREATE, format="json").status_code == 403
    body = create(admin)
    assert viewer.get("/api/v1/budgets").json()[0]["id"] == body["id"]
    assert viewer.patch(f"/api/v1/budgets/{body['id']}", {"amount": "5"}, format="json").status_code == 403
    assert admin.patch(f"/api/v1/budgets/{body['id']}", {"amount": "5"}, format="json").status_code == 200
    assert APIClient().get("/api/v1/budgets").status_code in (401, 403)


def test_a_test_alert_goes_through_every_channel(api, workspace):
    body = create(api)
    response = api.post(f"/api/v1/budgets/{body['id']}/test-alert")
    assert response.status_code == 202
    alert = response.json()["alert"]
    assert (alert["kind"], alert["budget"], alert["threshold"]) == ("test", body["id"], None)
    channels = {(d["channel"], d["target"], d["status"]) for d in alert["deliveries"]}
    assert channels == {("email", "owner@acme.test", "pending"), ("webhook", PUBLIC_HOOK, "pending")}
    email = AlertDelivery.objects.get(channel="email")
    assert delivery_attempt(email.pk).status == "delivered"
    [message] = mail.outbox
    assert message.to == ["owner@acme.test"] and "Test alert" in message.subject
    assert api.get("/api/v1/alerts").json()[0]["deliveries"][0]["status"] == "delivered"


def test_alert_history_shape_and_filter(api, workspace):
    first = create(api)
    second = create(api, amount="7")
    for budget_id in (first["id"], second["id"]):
        api.post(f"/api/v1/budgets/{budget_id}/test-alert")
    history = api.get("/api/v1/alerts").json()
    assert [a["budget"] for a in history] == [second["id"], first["id"]]  # newest first
    assert set(history[0]) == {"id", "kind", "budget", "period", "threshold", "budget_amount", "spend", "forecast",
                               "created_at", "deliveries"}
    assert set(history[0]["deliveries"][0]) == {"id", "channel", "target", "status", "attempts", "next_attempt_at",
                                                "delivered_at", "last_error"}
    assert [a["budget"] for a in api.get(f"/api/v1/alerts?budget={first['id']}").json()] == [first["id"]]
    assert api.get("/api/v1/alerts?limit=0").status_code == 400
    assert api.get("/api/v1/alerts?bogus=1").json() == {"bogus": ["Unknown field."]}


def test_the_forecast_endpoint(api):
    post_events(api, spend_events(10))
    body = api.get("/api/v1/forecast").json()
    assert set(body) == {"workspace", "period", "spend", "forecast", "daily_rate", "basis_days", "remaining_days",
                         "method", "currency"}
    assert body["spend"] == "10.000000" and float(body["forecast"]) >= 10
    assert "7 full UTC days" in body["method"]


def test_the_budget_shows_its_scope_spend(api, workspace, api_key):
    post_events(api, spend_events(15))
    other = client_with(api_key_create(workspace=workspace, name="batch").secret)
    post_events(other, spend_events(5))
    workspace_budget = create(api)
    key_budget = create(api, api_key=api_key.display_prefix)
    assert api.get(f"/api/v1/budgets/{workspace_budget['id']}").json()["spend"] == "20.000000"
    assert api.get(f"/api/v1/budgets/{key_budget['id']}").json()["spend"] == "15.000000"


def test_the_schema_documents_the_budgets_api(client, db):
    import yaml

    schema = yaml.safe_load(client.get("/api/schema/").content)
    assert {"/api/v1/budgets", "/api/v1/budgets/{budget_id}", "/api/v1/budgets/{budget_id}/test-alert",
            "/api/v1/alerts", "/api/v1/forecast", "/api/v1/allowance"} <= set(schema["paths"])


def test_test_alerts_past_the_hourly_limit_get_429_with_retry_after(api, other_api, settings):
    settings.BUDGET_TEST_ALERTS_PER_HOUR = 2
    body = create(api)
    assert [api.post(f"/api/v1/budgets/{body['id']}/test-alert").status_code for _ in range(2)] == [202, 202]
    response = api.post(f"/api/v1/budgets/{body['id']}/test-alert")
    assert response.status_code == 429
    assert 3590 <= int(response["Retry-After"]) <= 3600
    assert response.json()["detail"].startswith("At most 2 test alerts an hour per workspace: try again in 60 minutes.")
    assert Alert.objects.filter(kind="test").count() == 2
    other = create(other_api)
    assert other_api.post(f"/api/v1/budgets/{other['id']}/test-alert").status_code == 202  # its own limit
    Alert.objects.filter(kind="test", budget_id=body["id"]).update(created_at=F("created_at") - timedelta(hours=1))
    assert api.post(f"/api/v1/budgets/{body['id']}/test-alert").status_code == 202


HUGE = "99999999999999999999999"  # beyond 64 bits: an OverflowError on SQLite, out of range on PostgreSQL


@pytest.mark.parametrize(
    "query, errors",
    [
        (f"budget={HUGE}", {"budget": ["Ensure this value is less than or equal to 9223372036854775807."]}),
        ("budget=-1", {"budget": ["Ensure this value is greater than or equal to 1."]}),
        ("budget=0x10", {"budget": ["A valid integer is required."]}),
        ("budget=1e3", {"budget": ["A valid integer is required."]}),
        (f"limit={HUGE}", {"limit": ["Ensure this value is less than or equal to 500."]}),
        ("limit=NaN", {"limit": ["A valid integer is required."]}),
        ("budget=" + "9" * 5000, {"budget": ["String value too large."]}),
    ],
)
def test_alert_history_parameters_out_of_bounds_are_400_not_500(api, query, errors):
    response = api.get(f"/api/v1/alerts?{query}")
    assert response.status_code == 400, response.content
    assert response.json() == errors


@pytest.mark.parametrize("budget_id", [HUGE, "9223372036854775808", "0"])
def test_budget_ids_out_of_range_are_404_not_500(api, budget_id):
    create(api)
    assert api.get(f"/api/v1/budgets/{budget_id}").status_code == 404
    assert api.patch(f"/api/v1/budgets/{budget_id}", {"amount": "5"}, format="json").status_code == 404
    assert api.delete(f"/api/v1/budgets/{budget_id}").status_code == 404
    assert api.post(f"/api/v1/budgets/{budget_id}/test-alert").status_code == 404


def test_a_webhook_id_out_of_range_is_400(api):
    body = create(api)
    response = api.patch(f"/api/v1/budgets/{body['id']}", {"webhooks": [{"id": int(HUGE), "url": PUBLIC_HOOK}]}, format="json")
    assert response.status_code == 400
    assert response.json() == {"webhooks": [{"id": ["Ensure this value is less than or equal to 9223372036854775807."]}]}


def test_the_schema_says_an_alert_period_is_a_month_and_the_answer_matches(api, client):
    import re

    import yaml

    schema = yaml.safe_load(client.get("/api/schema/").content)
    period = schema["components"]["schemas"]["Alert"]["properties"]["period"]
    assert period.get("format") != "date"
    assert (period["type"], period["pattern"]) == ("string", r"^\d{4}-\d{2}$")
    test_alert = schema["paths"]["/api/v1/budgets/{budget_id}/test-alert"]["post"]["responses"]
    assert "429" in test_alert
    body = create(api)
    api.post(f"/api/v1/budgets/{body['id']}/test-alert")
    [alert] = api.get("/api/v1/alerts").json()
    assert re.fullmatch(period["pattern"], alert["period"]) and alert["period"] == body["period"]

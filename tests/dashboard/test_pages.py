"""The dashboard's pages through Django's test client: what each role sees and may do, the
numbers against the API's, the period picker, CSV exports, statements, keys, members, e-mails."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.close import statement_close
from billing.models import PaymentAttempt, Statement
from billing.statement_groups import usage_key
from tests.conftest import client_with, event
from tests.dashboard.conftest import PASSWORD, ingest, person
from workspaces.models import ApiKey, Membership

OCT = date(2026, 10, 1)
CLOSED = datetime(2026, 11, 2, 2, 0, tzinfo=dt_timezone.utc)


def signed_in(client, user):
    client.force_login(user)
    return client


def figures(response) -> dict:
    match = re.search(r'<script id="chart-figures" type="application/json">(.*?)</script>', response.content.decode(), re.S)
    assert match, "the overview carries its figures"
    return json.loads(match.group(1))


def figure_total(figure: dict) -> Decimal:
    return sum((Decimal(str(y)) for trace in figure["data"] for y in trace["y"]), Decimal(0))


def api_total(client, workspace: str, start: date, end: date) -> Decimal:
    answer = client.get("/api/v1/usage", {"workspace": workspace, "start": start, "end": end}).json()
    return Decimal(answer["total"])


@pytest.fixture
def october_statement(workspace, api_key):
    """October 2026: 500 sd15 ($2.00) + 20 sdxl ($3.38) − $0.50 free tier = $4.88 due."""
    ingest_at = datetime(2026, 11, 1, 1, 0, tzinfo=dt_timezone.utc)
    from usage.services import events_ingest

    events_ingest(workspace=workspace, api_key=api_key, now=ingest_at, raw_events=[
        event(occurred_at="2026-10-03T10:00:00Z", quantity=500),
        event(occurred_at="2026-10-20T10:00:00Z", quantity=20, model="sdxl", steps=50, width=1024, height=1824),
    ])  # fmt: skip
    statement, created = statement_close(workspace, OCT, now=CLOSED)
    assert created
    return statement


# --- Sign-in, sessions, password reset ---------------------------------------------------------------


def test_every_page_needs_a_sign_in(client, db):
    for path in ("/", "/usage/", "/statements/", "/keys/", "/members/", "/payment/", "/billing-details/", "/credits/", "/events/"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), path


def test_sign_in_by_email_in_any_case_and_sign_out(client, owner):
    response = client.post("/login/", {"username": "Owner@ACME.test", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get("/").status_code == 200
    client.post("/logout/")
    assert client.get("/").status_code == 302


def test_password_reset_mails_a_link_that_sets_a_new_password(client, owner):
    response = client.post("/password-reset/", {"email": "owner@acme.test"})
    assert response.status_code == 302
    assert len(mail.outbox) == 1
    link = re.search(r"https?://[^/]+(/password-reset/[^\s]+/)", mail.outbox[0].body).group(1)
    form = client.get(link, follow=True)
    assert b"Choose a password" in form.content
    done = client.post(form.redirect_chain[-1][0], {"new_password1": "a new long passphrase 42", "new_password2": "a new long passphrase 42"})
    assert done.status_code == 302
    client.logout()
    assert client.login(username="owner@acme.test", password="a new long passphrase 42")


def test_a_reset_for_an_unknown_address_says_the_same_and_sends_nothing(client, db):
    response = client.post("/password-reset/", {"email": "nobody@example.test"})
    assert response.status_code == 302 and not mail.outbox


# --- Workspaces, roles, isolation ---------------------------------------------------------------------


def test_a_member_of_one_workspace_cannot_open_another_by_url(client, owner, other_owner, other_workspace, october_statement):
    signed_in(client, other_owner)
    for path in ("/", "/usage/", "/statements/", "/keys/", "/members/", "/payment/", "/billing-details/", "/credits/", "/events/",
                 "/usage/export.csv"):
        assert client.get(path, {"workspace": "acme"}).status_code == 404, path
    assert client.get(f"/statements/{october_statement.pk}/invoice.pdf", {"workspace": "globex"}).status_code == 404
    assert client.post("/billing-details/save/?workspace=acme", {"legal_name": "x"}).status_code == 404
    # Another workspace's statement is not found, under either workspace's name.
    assert client.get(f"/statements/{october_statement.pk}/", {"workspace": "globex"}).status_code == 404
    assert client.get(f"/statements/{october_statement.pk}.csv", {"workspace": "globex"}).status_code == 404
    assert client.get("/", {"workspace": "no-such-workspace"}).status_code == 404


def test_the_switcher_lists_only_my_workspaces_and_remembers_the_choice(client, owner, other_workspace, workspace):
    from workspaces.services import workspace_create

    workspace_create(slug="initech", owner_email="boss@initech.test", name="Initech")
    Membership.objects.create(workspace=other_workspace, user=owner, role=Membership.Role.VIEWER)
    signed_in(client, owner)
    page = client.get("/").content.decode()
    assert 'id="workspace-switcher"' in page
    assert '<option value="acme" selected>' in page and '<option value="globex">' in page
    assert "initech" not in page
    assert client.get("/", {"workspace": "globex"}).status_code == 200
    page = client.get("/keys/").content.decode()  # no ?workspace=: the session remembers Globex
    assert '<option value="globex" selected>' in page and "owner@acme.test · Viewer" in page


def test_a_viewer_reads_but_cannot_change_anything(client, viewer, workspace, api_key, october_statement):
    signed_in(client, viewer)
    keys_page = client.get("/keys/").content.decode()
    assert "Create a key" not in keys_page and "Revoke" not in keys_page
    assert "Add a member" not in client.get("/members/").content.decode()
    assert 'id="card-form"' not in client.get("/payment/").content.decode()
    assert client.post("/keys/create/", {"name": "sneaky", "scopes": ["usage:read"]}).status_code == 403
    assert client.post(f"/keys/{api_key.pk}/revoke/").status_code == 403
    assert client.post("/members/add/", {"email": "x@acme.test", "role": "owner"}).status_code == 403
    assert client.post(f"/statements/{october_statement.pk}/retry/").status_code == 403
    assert ApiKey.objects.filter(workspace=workspace, revoked_at__isnull=True).count() == 1


def test_admins_manage_keys_but_only_owners_manage_members(client, admin_user, workspace):
    signed_in(client, admin_user)
    assert client.post("/keys/create/", {"name": "ci", "scopes": ["usage:read"]}).status_code == 200
    assert client.post("/members/add/", {"email": "new@acme.test", "role": "viewer"}).status_code == 403


def test_staff_read_any_workspace_but_change_nothing_there(client, workspace, api_key):
    staff = person("staff@meterboard.test", staff=True)
    signed_in(client, staff)
    page = client.get("/", {"workspace": "acme"})
    assert page.status_code == 200 and "Staff (read-only)" in page.content.decode()
    assert client.post("/keys/create/?workspace=acme", {"name": "x", "scopes": ["usage:read"]}).status_code == 403


# --- Overview -----------------------------------------------------------------------------------


def test_the_overview_shows_the_month_as_the_api_reports_it(client, owner, workspace, usage):
    signed_in(client, owner)
    response = client.get("/")
    page = response.content.decode()
    today = timezone.now().astimezone(dt_timezone.utc).date()
    expected = api_total(client, "acme", today.replace(day=1), today)
    assert expected == Decimal(usage["this_month"])
    found = figures(response)
    assert figure_total(found["chart-daily"]) == expected
    assert {trace["name"] for trace in found["chart-daily"]["data"]} == {"Image generation", "Upscaling", "Generator training"}
    assert sum(Decimal(str(x)) for x in found["chart-key"]["data"][0]["x"]) == expected
    assert found["chart-model"]["data"][0]["y"] == ["SDXL", "SD15", "Other features"]  # $1.69, $1.00, $5.09
    assert 'id="mtd-spend">$7.78<' in page
    # Free allowance: the default plan's $0.50 is used up.
    assert 'id="allowance-left">$0.00<' in page
    assert "UTC day" in page and "Numbers of this chart" in page


def test_the_period_picker_changes_every_chart(client, owner, workspace, usage):
    signed_in(client, owner)
    last_month = client.get("/", {"period": "last_month"})
    found = figures(last_month)
    assert figure_total(found["chart-daily"]) == Decimal(usage["last_month"])
    assert sum(Decimal(str(x)) for x in found["chart-key"]["data"][0]["x"]) == Decimal(usage["last_month"])
    three = figures(client.get("/", {"period": "last_3"}))
    assert figure_total(three["chart-daily"]) == Decimal(usage["this_month"]) + Decimal(usage["last_month"])


def test_a_custom_range_is_at_most_twelve_months(client, owner, workspace, usage):
    signed_in(client, owner)
    today = timezone.now().astimezone(dt_timezone.utc).date()
    too_long = client.get("/", {"period": "custom", "start": (today - timedelta(days=400)).isoformat(), "end": today.isoformat()})
    assert too_long.status_code == 200
    assert "at most 12 months" in too_long.content.decode()
    start = last_day = (today.replace(day=1) - timedelta(days=1))
    ok = client.get("/", {"period": "custom", "start": start.replace(day=1).isoformat(), "end": last_day.isoformat()})
    assert figure_total(figures(ok)["chart-daily"]) == Decimal(usage["last_month"])


def test_the_overview_reads_rollups_with_a_fixed_number_of_queries(client, owner, workspace, api_key, usage):
    signed_in(client, owner)
    client.get("/", {"period": "last_12"})  # the first request also saves the session, the default plan
    with CaptureQueriesContext(connection) as few:
        client.get("/", {"period": "last_12"})
    now = timezone.now().replace(microsecond=0)
    ingest(workspace, api_key, [event(occurred_at=(now - timedelta(days=d)).isoformat()) for d in range(1, 40)])
    with CaptureQueriesContext(connection) as more:
        client.get("/", {"period": "last_12"})
    assert len(more) == len(few)
    assert not [q for q in more.captured_queries if "usage_usageevent" in q["sql"]], "the overview never reads raw events"


def test_the_overview_shows_the_last_statement(client, owner, october_statement):
    signed_in(client, owner)
    page = client.get("/").content.decode()
    assert "October 2026" in page and "Finalized" in page


# --- Usage -------------------------------------------------------------------------------------------


def test_the_events_table_filters_and_pages_by_keyset(client, owner, workspace, api_key, usage):
    signed_in(client, owner)
    now = timezone.now().replace(microsecond=0)
    ingest(workspace, api_key, [event(occurred_at=(now - timedelta(seconds=s)).isoformat(), feature="pixelate",
                                      model=..., steps=..., width=..., height=...) for s in range(1, 61)])  # fmt: skip
    first = client.get("/usage/", {"feature": "pixelate"}).content.decode()
    assert first.count("<td>pixelate") == 50
    older = re.search(r'id="older" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    second = client.get(older).content.decode()
    assert second.count("<td>pixelate") == 10 and 'id="older"' not in second
    assert "60 events" in first  # the size hint, from the rollups


def test_the_rollups_table_pages(client, owner, usage):
    signed_in(client, owner)
    page = client.get("/usage/rollups/").content.decode()
    assert "Page 1 of 1" in page and "SD15 · 30 steps · 512×512" in page


def streamed(response) -> list[list[str]]:
    assert response.streaming, "exports stream"
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))


def test_the_csv_export_streams_every_event_of_the_range(client, owner, workspace, api_key, usage):
    signed_in(client, owner)
    today = timezone.now().astimezone(dt_timezone.utc).date()
    response = client.get("/usage/export.csv", {"start": today.replace(day=1).isoformat(), "end": today.isoformat()})
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    assert response["X-Expected-Rows"] == "4"
    rows = streamed(response)
    assert rows[0][:5] == ["event_id", "occurred_at_utc", "received_at_utc", "api_key", "feature"]
    assert len(rows) == 1 + 4
    assert sum(Decimal(row[-1]) for row in rows[1:]) == Decimal(usage["this_month"])
    only_key = streamed(client.get("/usage/export.csv", {"start": today.replace(day=1).isoformat(), "api_key": usage["second_key"].pk}))
    assert [row[4] for row in only_key[1:]] == ["training"]
    rollups = streamed(client.get("/usage/export.csv", {"kind": "rollups", "start": "2020-01-01", "end": today.isoformat()}))
    assert rollups[0][0] == "day_utc"
    assert sum(Decimal(row[11]) for row in rollups[1:]) == Decimal(usage["this_month"]) + Decimal(usage["last_month"])


# --- Statements ---------------------------------------------------------------------------------


def test_statements_list_detail_csv_and_print(client, owner, october_statement):
    signed_in(client, owner)
    listing = client.get("/statements/").content.decode()
    assert "October 2026" in listing and "$4.88" in listing and "so far" in listing
    detail = client.get(f"/statements/{october_statement.pk}/").content.decode()
    for line in october_statement.lines.all():  # usage under its feature and model, the rest as itself
        if line.kind == "usage":
            key, rest = usage_key(line.description)
            assert f"{key.feature_name} · {key.model}" in detail and f'<th scope="row">{rest}<span class="more' in detail
        else:
            assert line.description in detail
    assert "Monthly free tier" in detail and "$4.88" in detail
    assert "Retry payment" not in detail  # not failed
    rows = list(csv.reader(io.StringIO(client.get(f"/statements/{october_statement.pk}.csv").content.decode())))
    assert rows[0] == ["position", "kind", "description", "quantity", "unit_price_usd", "amount_usd"]
    assert rows[-1][-1] == "4.88" and rows[-2][-1] == "4.880000"
    assert [r[1] for r in rows[1:-2]] == ["usage", "usage", "free_tier"]
    printable = client.get(f"/statements/{october_statement.pk}/print/").content.decode()
    assert "Print or save as PDF" in printable and "Amount due: $4.88 USD" in printable


def test_the_preview_is_the_current_month_draft(client, owner, usage):
    signed_in(client, owner)
    page = client.get("/statements/preview/").content.decode()
    assert "Monthly free tier" in page
    # Last month was never closed: it is its own pending statement, not late usage on this month's.
    assert "Late usage for" not in page and "pending close" in page
    assert '<td class="num" id="amount-due">$7.28</td>' in page  # 7.78 − 0.50 free tier


def test_retry_payment_of_a_failed_statement(client, owner, workspace, october_statement, local_stripe):
    from billing.payments import statement_charge

    statement_charge(october_statement)  # no card: fails
    october_statement.refresh_from_db()
    assert october_statement.status == Statement.Status.PAYMENT_FAILED
    signed_in(client, owner)
    page = client.get(f"/statements/{october_statement.pk}/").content.decode()
    assert "Retry payment now" in page and "No card on file" in page
    response = client.post(f"/statements/{october_statement.pk}/retry/", follow=True)
    assert "The payment failed again" in response.content.decode()
    assert october_statement.payment_attempts.filter(status=PaymentAttempt.Status.FAILED).count() == 2


# --- API keys ------------------------------------------------------------------------------------------


def test_a_key_is_shown_once_works_and_stops_working_when_revoked(client, owner, workspace, usage):
    signed_in(client, owner)
    response = client.post("/keys/create/", {"name": "nightly export", "scopes": ["usage:read"]})
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    secret = re.search(r'id="new-secret" type="text" value="(mbk_[^"]+)"', response.content.decode()).group(1)
    assert secret not in client.get("/keys/").content.decode()
    assert client_with(secret).get("/api/v1/usage").status_code == 200
    key = ApiKey.objects.get(workspace=workspace, name="nightly export")
    assert key.scopes == ["usage:read"]
    client.post(f"/keys/{key.pk}/revoke/")
    assert client_with(secret).get("/api/v1/usage").status_code == 401
    assert "revoked" in client.get("/keys/").content.decode()


def test_a_key_needs_a_name(client, owner):
    signed_in(client, owner)
    response = client.post("/keys/create/", {"name": "", "scopes": ["usage:read"]})
    assert response.status_code == 400 and "This field is required" in response.content.decode()


def test_another_workspaces_key_cannot_be_revoked(client, owner, other_workspace):
    from workspaces.services import api_key_create

    theirs = api_key_create(workspace=other_workspace, name="theirs").api_key
    signed_in(client, owner)
    assert client.post(f"/keys/{theirs.pk}/revoke/").status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


# --- Members ------------------------------------------------------------------------------------------


def test_adding_a_new_person_invites_them_to_choose_a_password(client, owner, workspace):
    signed_in(client, owner)
    response = client.post("/members/add/", {"email": "New.Person@Acme.test", "role": "admin"}, follow=True)
    assert "We e-mailed them" in response.content.decode()
    user = get_user_model().objects.get(username="new.person@acme.test")
    assert not user.has_usable_password()
    assert Membership.objects.get(workspace=workspace, user=user).role == "admin"
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["new.person@acme.test"]
    link = re.search(r"https?://[^/]+(/password-reset/\S+/)", mail.outbox[0].body).group(1)
    client.logout()
    form = client.get(link, follow=True)
    client.post(form.redirect_chain[-1][0], {"new_password1": "welcome aboard 2026", "new_password2": "welcome aboard 2026"})
    client.logout()
    assert client.login(username="new.person@acme.test", password="welcome aboard 2026")


def test_adding_an_existing_member_is_refused(client, owner, viewer):
    signed_in(client, owner)
    response = client.post("/members/add/", {"email": "viewer@acme.test", "role": "admin"})
    assert response.status_code == 400 and "already a member" in response.content.decode()


def test_change_role_and_remove_but_never_the_last_owner(client, owner, viewer, workspace):
    signed_in(client, owner)
    me = Membership.objects.get(workspace=workspace, user=owner)
    theirs = Membership.objects.get(workspace=workspace, user=viewer)
    page = client.post(f"/members/{me.pk}/role/", {"role": "viewer"}, follow=True).content.decode()
    assert "needs an owner" in page
    page = client.post(f"/members/{me.pk}/remove/", follow=True).content.decode()
    assert "last owner cannot be removed" in page
    client.post(f"/members/{theirs.pk}/role/", {"role": "owner"})
    theirs.refresh_from_db()
    assert theirs.role == "owner"
    client.post(f"/members/{me.pk}/role/", {"role": "admin"})
    me.refresh_from_db()
    assert me.role == "admin"
    signed_in(client, viewer)  # now an owner
    client.post(f"/members/{me.pk}/remove/")
    assert not Membership.objects.filter(pk=me.pk).exists()


# --- Payment method and staff ---------------------------------------------------------------------


def test_the_payment_page_loads_stripe_js_from_the_setting(client, owner, local_stripe):
    signed_in(client, owner)
    page = client.get("/payment/").content.decode()
    assert f'<script src="{local_stripe.url}/js.stripe.com/v3/" defer></script>' in page
    assert 'data-publishable-key="pk_test_dashboard"' in page


def test_the_payment_page_says_when_payments_are_not_configured(client, owner, settings):
    settings.STRIPE_SECRET_KEY = ""
    signed_in(client, owner)
    page = client.get("/payment/").content.decode()
    assert "not configured" in page and "js.stripe.com" not in page


def test_staff_overview_shows_top_spenders_and_failed_payments(client, workspace, usage, october_statement, local_stripe):
    from billing.payments import statement_charge

    statement_charge(october_statement)
    staff = person("staff@meterboard.test", staff=True)
    signed_in(client, staff)
    page = client.get("/staff/").content.decode()
    assert "Acme" in page and "$7.78" in page
    assert 'id="failed-payments"' in page and "$4.88" in page


def test_the_staff_overview_is_for_staff_only(client, owner):
    signed_in(client, owner)
    assert client.get("/staff/").status_code == 302  # to the admin's sign-in


def test_plotly_is_served_from_our_static_files(client, db):
    response = client.get("/static/vendor/plotly.min.js")
    assert response.status_code == 200
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert b"plotly.js v" in body[:200]

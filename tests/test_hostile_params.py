"""Hostile query parameters (issue 9, finding 5): every parameter of every dashboard page and of the
GET API endpoints is parsed through a form or serializer with bounds, so that whatever arrives in
a URL is a form error or a clear 400, never a 500. DEBUG is off here (pytest-django's default).

The regression tests below each reproduce a URL that answered 500; the Hypothesis test throws
arbitrary strings (NUL, lone surrogates, invalid UTF-8, huge numbers, the first and last days
Python knows, cursors at the edges of time) at every parameter of every page and endpoint.
"""

from __future__ import annotations

import string
from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone
from urllib.parse import quote

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from tests.conftest import event, ingest
from tests.dashboard.conftest import person
from workspaces.models import Membership

pytestmark = pytest.mark.django_db


@pytest.fixture
def member(workspace):
    return person("owner@acme.test", workspace=workspace, role=Membership.Role.OWNER)


@pytest.fixture
def staff_user(db):
    return person("staff@meterboard.test", staff=True)


@pytest.fixture
def page_client(member) -> Client:
    client = Client()
    client.force_login(member)
    return client


@pytest.fixture
def api_session(member) -> APIClient:
    client = APIClient()
    client.force_login(member)
    return client


def text(response) -> str:
    if response.streaming:
        return b"".join(response.streaming_content).decode()
    return response.content.decode()


# --- The URLs that answered 500 ------------------------------------------------------------------------


PAGE_LINK = "This page link is not valid"
IN_RANGE = "between 2000-01-01 and 2099-12-31"


@pytest.mark.parametrize("url, message", [
    pytest.param("/usage/?before=0001-01-01T00:00:00%2B14:00~1", PAGE_LINK, id="events-cursor-before-the-first-day"),
    pytest.param("/usage/?before=9999-12-31T23:59:59-14:00~1", PAGE_LINK, id="events-cursor-after-the-last-day"),
    pytest.param("/usage/?start=0001-01-01&end=9999-12-31", IN_RANGE, id="usage-range-over-the-whole-calendar"),
    pytest.param("/usage/rollups/?start=0001-01-01&end=9999-12-31", IN_RANGE, id="rollups-range-over-the-whole-calendar"),
    pytest.param("/?period=custom&start=9999-01-01&end=9999-12-31", IN_RANGE, id="custom-period-in-the-year-9999"),
])  # fmt: skip
def test_a_url_that_answered_500_is_a_form_error(page_client, url, message):
    response = page_client.get(url)
    assert response.status_code == 200, url
    assert message in text(response)


def test_an_export_over_the_whole_calendar_is_a_400_before_any_row(page_client):
    for kind in ("events", "rollups"):
        response = page_client.get(f"/usage/export.csv?kind={kind}&start=0001-01-01&end=9999-12-31")
        assert response.status_code == 400, kind
        assert not response.streaming
        assert response["Content-Type"].startswith("text/plain")
        assert "between 2000-01-01 and 2099-12-31" in text(response)


def test_an_export_names_what_is_wrong_instead_of_exporting_this_month(page_client):
    response = page_client.get("/usage/export.csv?kind=nonsense&start=2026-01-01&end=2025-01-01&feature=x")
    assert response.status_code == 400
    body = text(response)
    assert "Export kind" in body and "Feature" in body and "comes before" in body


def test_a_nul_in_the_workspace_slug_of_a_page_is_a_400(page_client, staff_user):
    assert page_client.get("/usage/?workspace=%00").status_code == 400
    staff = Client()
    staff.force_login(staff_user)  # staff look a slug up in the database (PostgreSQL refuses NUL)
    assert staff.get("/usage/?workspace=%00").status_code == 400
    assert staff.get("/?workspace=" + "a" * 5000).status_code == 400


def test_a_nul_in_the_workspace_slug_of_the_api_is_a_400(api_session):
    for path in ("/api/v1/usage", "/api/v1/statements", "/api/v1/forecast", "/api/v1/budgets"):
        response = api_session.get(path + "?workspace=%00")
        assert response.status_code == 400, path
        assert "workspace" in response.json()


def test_the_sign_in_redirect_keeps_the_whole_query(client, db):
    response = client.get("/usage/?start=2026-01-01&workspace=acme")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/usage/%3Fstart%3D2026-01-01%26workspace%3Dacme"


def test_the_usage_api_range_is_bounded_in_the_calendar(api_session):
    response = api_session.get("/api/v1/usage?start=0001-01-01&end=0001-01-02&group_by=month")
    assert response.status_code == 400
    assert "start" in response.json()


def test_a_valid_cursor_still_pages(page_client, workspace, api_key):
    now = datetime.now(dt_timezone.utc).replace(microsecond=0)
    ingest(workspace, api_key, [event(occurred_at=(now - timedelta(seconds=s)).isoformat()) for s in range(1, 61)])
    first = text(page_client.get("/usage/"))
    assert 'id="older"' in first
    cursor = first.split('id="older" href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    second = page_client.get(cursor)
    assert "This page link is not valid" not in text(second)
    assert text(second).count('class="mono"') == 10


# --- Anything at all, in every parameter -------------------------------------------------------------

NASTY = [
    "\x00", "\ud800", "\udfff", "%", "~", "~1", "0~0", "-1", "0", "1e999", "NaN", "Infinity", "9" * 400,
    "99999999999999999999", "-99999999999999999999", "0001-01-01", "9999-12-31", "0000-00-00", "10000-01-01",
    "0001-01-01T00:00:00+14:00~1", "9999-12-31T23:59:59-14:00~1", "9999-12-31T23:59:59.999999+00:00~9223372036854775808",
    "2026-11-20T12:00:00+00:00~-1", "custom", "last_12", "rollups", "events", "month,day,api_key", "generation", "sdxl",
    "acme", "globex", " ", "\t=1+1", "a" * 5000,
]  # fmt: skip

EDGE_DAYS = ["0001-01-01", "0001-01-02", "1999-12-31", "2000-01-01", "2099-12-31", "2100-01-01", "9999-01-01", "9999-12-31"]

values = st.one_of(
    st.sampled_from(NASTY),
    st.sampled_from(EDGE_DAYS),
    st.text(alphabet=st.characters(exclude_categories=()), max_size=40),  # surrogates included
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.dates().map(date.isoformat),
    st.datetimes(timezones=st.sampled_from([dt_timezone(timedelta(hours=14)), dt_timezone(timedelta(hours=-14)), dt_timezone.utc]))
    .map(lambda moment: moment.isoformat())
    .flatmap(lambda instant: st.integers(min_value=-(10**20), max_value=10**20).map(lambda pk: f"{instant}~{pk}")),
    st.binary(max_size=20),  # not UTF-8, as a client may send it
)


def _encode(value) -> str:
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
    return quote(raw, safe="")


def query_string(params: dict) -> str:
    return "&".join(f"{quote(name, safe='')}={_encode(value)}" for name, value in params.items())


DASHBOARD_PARAMS = ("workspace", "period", "start", "end", "feature", "model", "api_key", "before", "page", "kind")
DASHBOARD_PAGES = [
    "/", "/usage/", "/usage/rollups/", "/usage/export.csv", "/statements/", "/statements/preview/",
    "/statements/{id}/", "/statements/{id}/print/", "/statements/{id}.csv", "/budgets/", "/budgets/{id}/",
    "/keys/", "/members/", "/payment/", "/staff/",
]  # fmt: skip
API_PARAMS = ("workspace", "start", "end", "group_by")
API_ENDPOINTS = [
    "/api/v1/usage", "/api/v1/statements", "/api/v1/statements/preview", "/api/v1/statements/{id}",
    "/api/v1/budgets", "/api/v1/budgets/{id}", "/api/v1/forecast", "/api/v1/allowance",
]  # fmt: skip
IDS = st.one_of(st.sampled_from(["1", "0", "9223372036854775807", "9223372036854775808", "9" * 30]),
                st.integers(min_value=0, max_value=10**25).map(str))  # fmt: skip


def params_of(names):
    return st.dictionaries(st.sampled_from(names), values, max_size=len(names)) | st.fixed_dictionaries(
        {}, optional={name: values for name in names}
    )


def _no_5xx(client, path: str, ids: str, params: dict) -> None:
    url = path.replace("{id}", ids) + "?" + query_string(params)
    response = client.get(url)
    if response.streaming:
        b"".join(response.streaming_content)  # an export must not fail mid-stream either
    assert response.status_code < 500, (url, response.status_code)


@pytest.fixture
def usage_data(workspace, api_key):
    now = datetime.now(dt_timezone.utc).replace(microsecond=0)
    ingest(workspace, api_key, [event(occurred_at=(now - timedelta(minutes=m)).isoformat(), event_id=f"=HYPERLINK(\"x\")-{m}")
                                for m in range(3)])  # fmt: skip


FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.mark.parametrize("path", DASHBOARD_PAGES)
@pytest.mark.parametrize("who", ["member", "staff"])
def test_no_dashboard_page_answers_5xx_whatever_the_query(path, who, page_client, staff_user, usage_data):
    if who == "staff":
        client = Client()
        client.force_login(staff_user)
    else:
        client = page_client

    @FUZZ
    @given(params=params_of(DASHBOARD_PARAMS), ids=IDS)
    def run(params, ids):
        _no_5xx(client, path, ids, params)

    run()


@pytest.mark.parametrize("path", API_ENDPOINTS)
def test_no_get_api_endpoint_answers_5xx_whatever_the_query(path, api_session, issued_key, usage_data):
    from tests.conftest import client_with

    keyed = client_with(issued_key.secret)

    @FUZZ
    @given(params=params_of(API_PARAMS), ids=IDS, by_key=st.booleans())
    def run(params, ids, by_key):
        _no_5xx(keyed if by_key else api_session, path, ids, params)

    run()


def test_query_strings_are_built_as_a_client_sends_them():
    assert query_string({"a": "\x00", "b": "\ud800", "c": b"\xff"}) == "a=%00&b=%ED%A0%80&c=%FF"
    assert set(string.ascii_letters) <= set(query_string({"x": string.ascii_letters}))

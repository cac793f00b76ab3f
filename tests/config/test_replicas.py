"""Reads from replicas (core.replicas, issue 13): the read-only pages and the usage API read from a
replica within the lag bound; a write, a person who has just written, a lagging or unreachable
replica, and every other endpoint read the primary. The replica here is a second connection to the
test database (not in recovery: lag 0); the simulated cluster test runs a real streaming replica."""

from __future__ import annotations

import socket

import pytest
from django.db import connection, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext

from core import replicas
from tests.conftest import client_with, event, ingest
from tests.dashboard.conftest import PASSWORD, person
from workspaces.models import Membership, Workspace

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "replica_1"])
ALIAS = "replica_1"


def postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("replicas are PostgreSQL's")


@pytest.fixture
def replica(transactional_db, settings):
    """config.settings_test's replica_1 (a mirror of the test database), named a replica."""
    postgres_only()
    settings.DATABASE_REPLICAS = [ALIAS]
    replicas.lags_forget()
    yield connections[ALIAS]
    connections[ALIAS].close()
    replicas.lags_forget()


@pytest.fixture
def signed_in(workspace):
    owner = person("owner@acme.test", workspace=workspace, role=Membership.Role.OWNER)
    client = Client()
    assert client.login(username=owner.username, password=PASSWORD)
    return client


def replica_queries(call) -> list[str]:
    with CaptureQueriesContext(connections[ALIAS]) as captured:
        response = call()
    assert response.status_code == 200, response.content[:300]
    return [query["sql"] for query in captured.captured_queries if "pg_is_in_recovery" not in query["sql"]]


def test_the_read_only_pages_and_the_usage_api_read_from_the_replica(replica, workspace, api_key, issued_key, signed_in):
    ingest(workspace, api_key, [event()])
    for path in ("/", "/usage/", "/usage/rollups/", "/usage/export.csv", "/statements/", "/statements/preview/"):
        assert replica_queries(lambda path=path: signed_in.get(path)), path
    api = client_with(issued_key.secret)
    assert replica_queries(lambda: api.get("/api/v1/usage"))


def test_what_must_see_the_latest_write_reads_the_primary(replica, workspace, issued_key, signed_in):
    api = client_with(issued_key.secret)
    assert replica_queries(lambda: api.get("/api/v1/allowance")) == []
    assert replica_queries(lambda: signed_in.get("/budgets/")) == []
    assert replica_queries(lambda: signed_in.get("/keys/")) == []


def test_a_person_who_just_wrote_reads_the_primary(replica, workspace, signed_in):
    response = signed_in.post("/budgets/new/", {"amount": "100", "thresholds": "50,100"})
    assert response.status_code in (200, 302)
    assert replicas.PIN_COOKIE in signed_in.cookies
    assert replica_queries(lambda: signed_in.get("/")) == []


def test_a_lagging_or_unreachable_replica_is_not_read(replica, signed_in, settings):
    settings.REPLICA_MAX_LAG_SECONDS = -1  # any lag is too much
    assert replica_queries(lambda: signed_in.get("/")) == []
    settings.REPLICA_MAX_LAG_SECONDS = 5
    replicas.lags_forget()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    mirror = connections[ALIAS]
    mirror.close()
    shared = mirror.settings_dict  # the test mirror's dict may be the primary's own: never change it
    mirror.settings_dict = {**shared, "PORT": closed}
    try:
        assert signed_in.get("/").status_code == 200  # served by the primary
        assert replicas.lag_of(ALIAS) == float("inf")
    finally:
        mirror.close()
        mirror.settings_dict = shared


def test_after_a_write_the_same_request_reads_the_primary(replica, workspace):
    with replicas.reading_from_replica():
        assert Workspace.objects.all().db == ALIAS
        Workspace.objects.filter(pk=workspace.pk).update(name="Renamed")
        assert Workspace.objects.all().db == "default"
        assert Workspace.objects.get(pk=workspace.pk).name == "Renamed"
    assert Workspace.objects.all().db == "default"  # outside: the primary

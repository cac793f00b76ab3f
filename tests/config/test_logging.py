"""Logs as JSON lines (issue 14, operations): LOG_FORMAT=json makes every record one JSON object
with the request's id, and for an API call its workspace and key prefix; a secret never appears,
not even when code logs one by mistake. Both middleware chains (config.wsgi) carry the context."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from config.wsgi import Application
from core.logcontext import JsonFormatter

pytestmark = pytest.mark.django_db(transaction=True)  # the served application opens and closes its connection
ROOT = Path(__file__).resolve().parents[2]
SERVED = Application()  # made first: setting Django up configures logging anew


@pytest.fixture
def json_lines():
    """What the django.request and usage loggers write, through the JSON formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    loggers = [logging.getLogger(name) for name in ("django.request", "mb.test")]
    for logger in loggers:
        logger.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    for logger in loggers:
        logger.removeHandler(handler)


def call(method: str, path: str, *, secret: str, body: dict, request_id: str | None = None) -> tuple[int, dict]:
    """Through the served application (the short chain for Bearer calls to the events API)."""
    raw = json.dumps(body).encode()
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80", "HTTP_HOST": "127.0.0.1", "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(raw), "CONTENT_LENGTH": str(len(raw)), "CONTENT_TYPE": "application/json",
        "HTTP_AUTHORIZATION": f"Bearer {secret}",
    }  # fmt: skip
    if request_id is not None:
        environ["HTTP_X_REQUEST_ID"] = request_id
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer["status"], answer["headers"] = int(status.split()[0]), dict(headers)

    response = SERVED(environ, start_response)
    b"".join(response)
    response.close()  # as gunicorn does: request_finished, after Django logged the answer
    return answer["status"], answer["headers"]


def test_a_refused_api_call_is_logged_as_one_json_line_with_its_request_workspace_and_key(
    issued_key, workspace, json_lines
):
    status, headers = call("POST", "/api/v1/events", secret=issued_key.secret, body={"events": "not a list"})
    assert status == 400
    [line] = [line for line in json_lines() if line["logger"] == "django.request"]
    assert line["level"] == "WARNING" and line["message"].startswith("Bad Request: /api/v1/events")
    assert line["request_id"] == headers["X-Request-ID"] and len(line["request_id"]) == 32
    assert (line["workspace"], line["api_key"]) == (workspace.slug, issued_key.api_key.prefix)
    assert issued_key.secret not in json.dumps(json_lines())


def test_the_callers_request_id_is_kept_and_a_strange_one_replaced(issued_key, json_lines):
    assert call("POST", "/api/v1/events", secret=issued_key.secret, body={}, request_id="lb-7f3a.1")[1][
        "X-Request-ID"] == "lb-7f3a.1"  # fmt: skip
    replaced = call("POST", "/api/v1/events", secret=issued_key.secret, body={}, request_id='x" injected\n')[1]
    assert replaced["X-Request-ID"] != 'x" injected\n' and len(replaced["X-Request-ID"]) == 32
    # The full chain (a page, a signed-in person) answers one too.
    assert len(Client().get("/login/")["X-Request-ID"]) == 32


def test_a_secret_logged_by_mistake_is_cut_to_what_identifies_it(issued_key, json_lines):
    logging.getLogger("mb.test").error(
        "calling with %s, Stripe %s, signing %s", issued_key.secret, "sk_live_51Habcdef0123456789", "whsec_abc/def+123="
    )
    [line] = json_lines()
    assert issued_key.secret not in line["message"] and f"mbk_{issued_key.api_key.prefix}_[secret]" in line["message"]
    assert "sk_live_[secret]" in line["message"] and "51Habcdef" not in line["message"]
    assert "whsec_[secret]" in line["message"] and "abc/def" not in line["message"]
    assert "request_id" not in line  # outside a request: no stale context


def test_log_format_json_makes_every_line_json_in_a_real_process():
    env = {**os.environ, "LOG_FORMAT": "json", "DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "1"}
    code = "import django, logging; django.setup(); logging.getLogger('mb.check').warning('hello %s', 'world')"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    [line] = [json.loads(text) for text in done.stderr.splitlines() if text.startswith("{")]
    assert (line["level"], line["logger"], line["message"]) == ("WARNING", "mb.check", "hello world")


def signed_in(workspace, email: str, role: str) -> tuple[Client, object]:
    from django.contrib.auth import get_user_model

    from workspaces.models import Membership

    person = get_user_model().objects.create(username=email, email=email)
    Membership.objects.create(workspace=workspace, user=person, role=role)
    browser = Client(HTTP_HOST="127.0.0.1")
    browser.force_login(person)
    return browser, person


def test_a_dashboard_request_logs_the_workspace_viewed_and_the_user_id_never_the_email(workspace, other_workspace, json_lines):
    from workspaces.models import Membership

    browser, person = signed_in(workspace, "viewer@acme.test", Membership.Role.VIEWER)
    Membership.objects.create(workspace=other_workspace, user=person, role=Membership.Role.VIEWER)
    # A viewer may not create a budget: the page answers 403, which Django logs.
    answer = browser.post(f"/budgets/new/?workspace={other_workspace.slug}", {"amount": "10"})
    assert answer.status_code == 403
    [line] = [line for line in json_lines() if line["logger"] == "django.request"]
    assert line["message"].startswith("Forbidden")
    assert (line["workspace"], line["user"]) == (other_workspace.slug, person.pk)
    assert line["request_id"] == answer["X-Request-ID"]
    assert "viewer@acme.test" not in json.dumps(json_lines())


def test_an_api_call_in_a_session_logs_its_workspace_and_user_id(workspace, json_lines):
    from workspaces.models import Membership

    browser, person = signed_in(workspace, "owner2@acme.test", Membership.Role.OWNER)
    answer = browser.post(f"/api/v1/budgets?workspace={workspace.slug}", {"amount": "-1"}, content_type="application/json")
    assert answer.status_code == 400
    [line] = [line for line in json_lines() if line["logger"] == "django.request"]
    assert (line["workspace"], line["user"]) == (workspace.slug, person.pk)
    assert "owner2@acme.test" not in json.dumps(json_lines())

"""Machine calls to the hot endpoints take a short middleware chain (config.wsgi, issue 12) and
must answer exactly as the full chain does: same statuses, bodies and security headers, for
successes and every kind of refusal."""

from __future__ import annotations

import pytest

from config.wsgi import Application, application, is_machine_call
from tests.conftest import event, wsgi_call
from workspaces.services import api_key_create

pytestmark = pytest.mark.django_db(transaction=True)

@pytest.fixture
def secrets(workspace):
    return {
        "all": api_key_create(workspace=workspace, name="all scopes").secret,
        "read": api_key_create(workspace=workspace, name="read only", scopes=["usage:read"]).secret,
    }


def cases(secrets):
    def fresh(events):
        return {"events": events}

    yield "one event", "POST", "/api/v1/events", secrets["all"], lambda: event(event_id="same-id"), "application/json"
    yield "a batch, one rejected", "POST", "/api/v1/events", secrets["all"], lambda: fresh(
        [event(event_id="b-1"), event(event_id="b-2", model="nope")]), "application/json"
    yield "unknown key", "POST", "/api/v1/events", "mbk_000000000000_nope", lambda: event(), "application/json"
    yield "scope missing", "POST", "/api/v1/events", secrets["read"], lambda: event(), "application/json"
    yield "not JSON", "POST", "/api/v1/events", secrets["all"], lambda: b"{nope", "application/json"
    yield "wrong type", "POST", "/api/v1/events", secrets["all"], lambda: event(), "text/plain"
    yield "too many", "POST", "/api/v1/events", secrets["all"], lambda: fresh([event()] * 1001), "application/json"
    yield "allowance", "GET", "/api/v1/allowance", secrets["all"], lambda: None, "application/json"
    yield "wrong method", "GET", "/api/v1/events", secrets["all"], lambda: None, "application/json"


def test_every_answer_is_the_full_chains_answer(secrets, settings):
    settings.SECURE_HSTS_SECONDS = 0
    fresh = Application()
    for name, method, path, secret, body, content_type in cases(secrets):
        # The machine chain first (the event is new there, a duplicate through the full chain,
        # so each is sent once more to compare like with like).
        machine = wsgi_call(fresh.machine, method, path, secret=secret, body=body(), content_type=content_type)
        machine_again = wsgi_call(fresh.machine, method, path, secret=secret, body=body(), content_type=content_type)
        full = wsgi_call(fresh.full, method, path, secret=secret, body=body(), content_type=content_type)
        assert machine_again == full, name
        assert machine[0] in (200, 400, 401, 403, 405, 413, 415), (name, machine)
        assert full[2]["Content-Security-Policy"] and full[2]["X-Content-Type-Options"] == "nosniff", name


def test_a_host_not_allowed_is_refused_by_both_chains(secrets):
    fresh = Application()
    for handler in (fresh.machine, fresh.full):
        environ_host = {"HTTP_HOST": "evil.example"}
        status, _, _ = wsgi_call(handler, "POST", "/api/v1/events", secret=secrets["all"], body=event(), **environ_host)
        assert status == 400


def test_only_bearer_calls_to_the_hot_paths_take_the_short_chain():
    def environ(path, authorization=None):
        return {"PATH_INFO": path, **({"HTTP_AUTHORIZATION": authorization} if authorization else {})}

    assert is_machine_call(environ("/api/v1/events", "Bearer mbk_x"))
    assert is_machine_call(environ("/api/v1/allowance", "bearer mbk_x"))
    assert not is_machine_call(environ("/api/v1/events"))  # a person's call: sessions, CSRF
    assert not is_machine_call(environ("/api/v1/events", "Basic eDp5"))
    assert not is_machine_call(environ("/api/v1/usage", "Bearer mbk_x"))
    assert not is_machine_call(environ("/api/v1/events/", "Bearer mbk_x"))


def test_the_short_chain_has_no_session_csrf_or_messages():
    """What it leaves out (the full chain's CSRF check runs as a view middleware; sessions and
    messages touch every response)."""
    assert application.machine._view_middleware == []
    assert application.full._view_middleware != []
    names = {type(getattr(m, "__self__", m)).__name__ for m in application.machine._template_response_middleware}
    assert "MessageMiddleware" not in names

"""Throttles (issue 9, finding 6): sign-in lockout with backoff, API limits per key and per client
address, guessed keys, password-reset mails; 429 with Retry-After everywhere."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client

from tests.conftest import client_with, event

PASSWORD = "correct horse battery staple"


@pytest.fixture
def person(db):
    return get_user_model().objects.create_user("ana@example.test", "ana@example.test", PASSWORD)


def sign_in(client: Client, email: str, password: str, **extra):
    return client.post("/login/", {"username": email, "password": password}, **extra)


def test_thirty_wrong_passwords_lock_the_account_even_against_the_right_one(person, settings):
    client = Client()
    statuses = [sign_in(client, "ana@example.test", f"guess-{n}").status_code for n in range(30)]
    assert statuses[:4] == [200] * 4  # the form again, "do not match"
    assert set(statuses[4:]) == {429}
    locked = sign_in(client, "ana@example.test", PASSWORD)
    assert locked.status_code == 429 and int(locked["Retry-After"]) > 0
    assert "Too many attempts to sign in" in locked.content.decode()
    assert "_auth_user_id" not in client.session


def test_a_lockout_ends_and_the_next_one_lasts_twice_as_long(person, settings):
    settings.LOGIN_LOCKOUT_SECONDS = 1
    client = Client()
    for n in range(5):
        sign_in(client, "ana@example.test", f"guess-{n}")
    first = sign_in(client, "ana@example.test", PASSWORD)
    assert first.status_code == 429 and first["Retry-After"] == "1"
    time.sleep(1.1)  # the real clock
    for n in range(5):
        sign_in(client, "ana@example.test", f"again-{n}")
    second = sign_in(client, "ana@example.test", PASSWORD)
    assert second.status_code == 429 and second["Retry-After"] == "2"
    time.sleep(2.1)
    assert sign_in(client, "ana@example.test", PASSWORD).status_code == 302


def test_one_address_trying_many_accounts_is_locked_too(person, settings):
    settings.LOGIN_FAILURES_PER_ADDRESS = 8
    client = Client(REMOTE_ADDR="203.0.113.9")
    for n in range(8):
        sign_in(client, f"someone-{n}@example.test", "guess")
    assert sign_in(client, "ana@example.test", PASSWORD).status_code == 429
    # Another address may still sign in to that account.
    assert sign_in(Client(REMOTE_ADDR="198.51.100.7"), "ana@example.test", PASSWORD).status_code == 302


def test_x_forwarded_for_is_believed_only_behind_a_declared_proxy(person, settings):
    settings.LOGIN_FAILURES_PER_ADDRESS = 3
    client = Client(REMOTE_ADDR="10.0.0.2")
    for n in range(3):  # a client forging a new X-Forwarded-For each time gains nothing
        sign_in(client, f"x{n}@example.test", "guess", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")
    assert sign_in(client, "ana@example.test", PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.99").status_code == 429
    settings.BEHIND_PROXY = True
    assert sign_in(client, "ana@example.test", PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.99").status_code == 302


def test_a_signed_in_success_clears_the_accounts_failures(person):
    client = Client()
    for n in range(4):
        sign_in(client, "ana@example.test", f"guess-{n}")
    assert sign_in(client, "ana@example.test", PASSWORD).status_code == 302
    client.logout()
    for n in range(4):
        assert sign_in(client, "ana@example.test", f"more-{n}").status_code == 200


def test_api_calls_per_key_are_limited_with_retry_after(api, settings):
    settings.API_RATE_PER_KEY = "5/min"
    answers = [api.get("/api/v1/usage") for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert 0 < int(answers[-1]["Retry-After"]) <= 60
    assert "throttled" in answers[-1].json()["detail"].lower() or "request" in answers[-1].json()["detail"].lower()


def test_guessed_api_keys_from_one_address_are_refused_past_the_limit(db, settings):
    settings.API_AUTH_FAILURES_PER_ADDRESS = "3/min"
    guesser = client_with("mbk_guess_000000000000")
    statuses = [guesser.post("/api/v1/events", {"events": [event()]}, format="json").status_code for _ in range(5)]
    assert statuses == [401, 401, 401, 429, 429]


def test_unauthenticated_calls_per_address_are_limited(db, settings):
    settings.API_RATE_ANONYMOUS = "2/min"
    anonymous = Client()
    statuses = [anonymous.get("/api/v1/usage").status_code for _ in range(3)]
    assert statuses[:2] != [429, 429] and statuses[2] == 429


def test_password_reset_mails_are_limited_per_address_and_forms_per_client(person, settings):
    settings.PASSWORD_RESETS_PER_ADDRESS = 2
    settings.PASSWORD_RESETS_PER_CLIENT = 4
    client = Client()
    answers = [client.post("/password-reset/", {"email": "ana@example.test"}) for _ in range(5)]
    assert [a.status_code for a in answers] == [302, 302, 302, 302, 429]
    assert len(mail.outbox) == 2  # the third and fourth look sent, and are not: nothing is revealed
    assert answers[-1]["Retry-After"] == "3600"

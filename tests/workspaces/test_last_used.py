"""last_used_at is recorded off the request's path (issue 10, finding 2)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import DatabaseError, connection
from django.utils import timezone

from workspaces import services
from workspaces.models import ApiKey
from workspaces.services import LAST_USED_RESOLUTION, api_key_authenticate


def test_a_failing_last_used_write_never_fails_authentication(issued_key, monkeypatch):
    def broken_update(*args, **kwargs):
        raise DatabaseError("cannot execute UPDATE in a read-only transaction")

    monkeypatch.setattr(services, "_write_last_used", broken_update)
    assert api_key_authenticate(issued_key.secret).pk == issued_key.api_key.pk


@pytest.mark.django_db(transaction=True)
def test_on_a_read_only_session_authentication_works_and_the_connection_stays_usable(issued_key):
    with connection.cursor() as cursor:
        cursor.execute(
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"
            if connection.vendor == "postgresql"
            else "PRAGMA query_only = ON"
        )
    try:
        assert api_key_authenticate(issued_key.secret) is not None
        assert ApiKey.objects.filter(pk=issued_key.api_key.pk).exists()  # not an aborted transaction
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"
                if connection.vendor == "postgresql"
                else "PRAGMA query_only = OFF"
            )
    assert ApiKey.objects.get(pk=issued_key.api_key.pk).last_used_at is None  # not recorded, not failed
    assert api_key_authenticate(issued_key.secret) is not None
    assert ApiKey.objects.get(pk=issued_key.api_key.pk).last_used_at is not None  # recorded once writable


def test_last_used_is_written_at_most_once_per_resolution(issued_key, django_assert_num_queries):
    api_key_authenticate(issued_key.secret)
    first = ApiKey.objects.get(pk=issued_key.api_key.pk).last_used_at
    assert first is not None and timezone.now() - first < timedelta(seconds=5)
    with django_assert_num_queries(0):  # the key is cached (KEY_CACHE_SECONDS): no lookup, and no write within the resolution
        api_key_authenticate(issued_key.secret)
    assert LAST_USED_RESOLUTION <= timedelta(minutes=1)

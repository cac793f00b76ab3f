"""Every dashboard form sent back with errors says so as the budget form does (issue 16, parts 4
and 5): each field in error is aria-invalid and described by the error list, which is role=alert
(static/js/dashboard.js then puts the focus on the first such field). The browser side, for the
key form: tests/dashboard/test_accessibility.py."""

from __future__ import annotations

import html
import re

import pytest

pytestmark = pytest.mark.django_db


def opening_tag(page: str, element_id: str) -> str:
    match = re.search(rf'<[a-z]+\b[^>]*\bid="{re.escape(element_id)}"[^>]*>', page)
    assert match, f"no element #{element_id}"
    return match.group(0)


def assert_announced(page: str, field_ids: list[str], errors_id: str) -> None:
    for field_id in field_ids:
        tag = opening_tag(page, field_id)
        assert 'aria-invalid="true"' in tag, tag
        described = re.search(r'aria-describedby="([^"]*)"', tag)
        assert described and errors_id in described.group(1).split(), tag
    assert 'role="alert"' in opening_tag(page, errors_id)
    assert page.count('aria-invalid="true"') == len(field_ids), "only the fields in error"


CASES = [
    ("post", "/keys/create/", {"name": "  ", "scopes": ["usage:read"]}, ["id_name"], "key-errors"),
    ("post", "/keys/create/", {"name": "render farm"}, [f"id_scopes_{n}" for n in range(4)], "key-errors"),
    ("post", "/onboarding/key/", {"name": "x" * 101}, ["onboarding-key-name"], "onboarding-key-errors"),
    ("post", "/members/add/", {"email": "owner@acme.test", "role": "viewer"}, ["id_email"], "member-errors"),
    ("post", "/members/add/", {"email": "new@acme.test", "role": "emperor"}, ["id_role"], "member-errors"),
    ("post", "/billing-details/save/", {"tax_id": "!!", "country": "XX"}, ["id_tax_id", "id_country"], "profile-errors"),
    ("post", "/billing-details/save/", {"billing_emails": "not an address"}, ["id_billing_emails"], "profile-errors"),
    ("post", "/credits/buy/", {"amount": "1"}, ["id_buy_amount"], "buy-errors"),
    ("post", "/credits/auto-recharge/", {"threshold": "x", "amount": "25", "max_per_day": "3"}, ["id_threshold"],
     "recharge-errors"),
    ("post", "/events/endpoints/new/", {"url": "ftp://hooks.example.com/x", "event_types": ["*"]}, ["id_url"],
     "endpoint-errors"),
    ("post", "/events/endpoints/new/", {"url": "https://hooks.example.com/x"}, [f"id_event_types_{n}" for n in range(11)],
     "endpoint-errors"),
    ("get", "/", {"period": "custom", "start": "2026-06-30", "end": "2026-06-01"}, ["id_start", "id_end"], "period-errors"),
    ("get", "/", {"period": "custom", "start": "someday", "end": "2026-06-01"}, ["id_start"], "period-errors"),
    ("get", "/usage/", {"start": "someday"}, ["id_start"], "filter-errors"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "data", "fields", "errors_id"), CASES, ids=[f"{c[1]} {c[4]} {c[3][0]}" for c in CASES])
def test_a_form_sent_back_with_errors_marks_its_fields_and_announces_them(client, owner, method, path, data, fields, errors_id):
    client.force_login(owner)
    response = getattr(client, method)(path, data)
    assert response.status_code in (200, 400)
    assert_announced(html.unescape(response.content.decode()), fields, errors_id)


def test_a_form_without_errors_marks_nothing(client, owner):
    client.force_login(owner)
    for path in ("/", "/usage/", "/keys/", "/members/", "/billing-details/", "/credits/", "/events/", "/budgets/"):
        page = client.get(path).content.decode()
        assert 'aria-invalid="true"' not in page and 'role="alert"' not in page, path

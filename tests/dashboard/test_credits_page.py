"""The credits page: the wallet, buying credits through a real localstripe, auto-recharge, roles and
isolation."""

from __future__ import annotations

from decimal import Decimal

from billing import cards
from billing.credits import credit_balance, credits_grant
from billing.models import AutoRecharge


def signed_in(client, user):
    client.force_login(user)
    return client


def test_members_see_the_wallet_and_only_their_own(client, viewer, workspace, other_workspace, other_owner):
    credits_grant(workspace, Decimal(12), actor="staff", note="launch promo")
    credits_grant(other_workspace, Decimal(99), actor="staff", note="globex secret")
    page = signed_in(client, viewer).get("/credits/", {"workspace": "acme"})
    assert page.status_code == 200
    body = page.content.decode()
    assert "launch promo" in body and "$12.00" in body and "globex secret" not in body
    assert "Buy credits" not in body  # a viewer reads only
    assert client.post("/credits/buy/?workspace=acme", {"amount": "10"}).status_code in (403, 404)
    client.logout()
    signed_in(client, other_owner)
    assert client.get("/credits/", {"workspace": "acme"}).status_code == 404
    assert client.post("/credits/buy/?workspace=acme", {"amount": "10"}).status_code == 404


def test_an_owner_buys_credits_and_sets_auto_recharge(client, owner, workspace, local_stripe):
    cards.payment_method_set(workspace, "pm_card_visa")
    signed_in(client, owner)
    bad = client.post("/credits/buy/?workspace=acme", {"amount": "2"})
    assert bad.status_code == 400 and "from 5 to 10,000 USD" in bad.content.decode()
    done = client.post("/credits/buy/?workspace=acme", {"amount": "30"}, follow=True)
    assert done.status_code == 200 and "30.00 USD of credits bought" in done.content.decode()
    assert credit_balance(workspace.pk) == Decimal(30)
    saved = client.post("/credits/auto-recharge/?workspace=acme", {"enabled": "on", "threshold": "10", "amount": "25", "max_per_day": "2"})
    assert saved.status_code == 302
    setting = AutoRecharge.objects.get(workspace=workspace)
    assert setting.enabled and setting.threshold == 10 and setting.amount == 25 and setting.max_per_day == 2
    wrong = client.post("/credits/auto-recharge/?workspace=acme", {"threshold": "x", "amount": "25", "max_per_day": "2"})
    assert wrong.status_code == 400 and "Threshold" in wrong.content.decode()

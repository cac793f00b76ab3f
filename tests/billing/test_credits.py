"""Prepaid credits: the statement's credits line, consumption by the close (and its give-back on a
reissue), expiry, the API, purchases through a real localstripe, the allowance of prepaid-only
plans and auto-recharge."""

from __future__ import annotations

import threading
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from unittest import mock

import pytest
from django.db import connection
from django.db.models import Sum

from billing import cards, credit_purchases
from billing import statement as engine
from billing.auto_recharge import auto_recharge_set, credits_auto_recharge
from billing.close import statement_close
from billing.credits import credit_balance, credit_summary, credits_expire_due, credits_grant
from billing.drafts import statement_preview
from billing.errors import CloseRefused
from billing.models import (
    AutoRecharge,
    CreditEntry,
    CreditLot,
    CreditPurchase,
    Statement,
)
from billing.reissue import statement_void_and_reissue
from billing.stripe_events import webhook_event_receive
from tests.conftest import event, ingest

OCT = date(2026, 10, 1)
RECEIVED = datetime(2026, 11, 1, 1, 0, tzinfo=timezone.utc)
CLOSED = datetime(2026, 11, 2, 2, 0, tzinfo=timezone.utc)
D = Decimal


def usage(quantity: int, unit: str = "0.004") -> engine.UsageGroup:
    return engine.UsageGroup("generation", "sd15", 30, 512, 512, False, False, D(unit), quantity)


def assert_ledger_consistent(workspace) -> None:
    """The balance is the sum of the entries, each lot's remaining the sum of its own, never < 0."""
    for lot in CreditLot.objects.filter(workspace=workspace):
        assert lot.remaining == lot.entries.aggregate(s=Sum("amount"))["s"] >= 0
    lots = CreditLot.objects.filter(workspace=workspace).aggregate(s=Sum("remaining"))["s"] or D(0)
    assert credit_balance(workspace.pk) == lots >= 0


# --- The engine ---------------------------------------------------------------------------------


def test_credits_come_after_fees_and_before_tax_and_never_below_zero():
    plan = engine.PlanTerms(free_tier_credit=D("0.50"), reserved_fee=D(3))
    built = engine.build(usage=[usage(1000)], plan=plan, tax=engine.Tax("VAT", D(20)), credits_available=D(5))
    kinds = [line.kind for line in built.lines]
    assert kinds == ["usage", "free_tier", "fixed_fee", "credits", "tax"][: len(kinds)] or kinds == ["usage", "free_tier", "fixed_fee", "credits"]
    # 4.00 usage − 0.50 free + 3.00 fee = 6.50; 5.00 of credits; VAT on the 1.50 left.
    assert built.credits_applied == D(5)
    assert built.tax == D("0.30") and built.total == D("1.80")
    # More credits than the month costs: it takes what the month costs, the rest stays.
    rich = engine.build(usage=[usage(1000)], plan=plan, tax=engine.Tax("VAT", D(20)), credits_available=D(100))
    assert rich.credits_applied == D("6.50") and rich.total == 0 and rich.tax == 0
    assert [line.kind for line in rich.lines] == ["usage", "free_tier", "fixed_fee", "credits"]


def test_credits_never_pay_the_carried_balance_which_was_taxed_before():
    built = engine.build(usage=[usage(250)], plan=engine.PlanTerms(), carried_balance=D("0.40"), credits_available=D(10))
    assert built.credits_applied == D("0.50")  # 1.00 usage − 0.50 free tier
    assert built.total == D("0.40")  # the carry is still owed


# --- Close, reissue, expiry --------------------------------------------------------------------


@pytest.fixture
def october(workspace, api_key):
    """October: 1000 sd15 images = 4.00 USD − 0.50 free tier = 3.50 USD."""
    ingest(workspace, api_key, [event(occurred_at="2026-10-03T10:00:00Z", quantity=1000)], now=RECEIVED)
    return workspace


def test_the_close_consumes_lots_oldest_expiring_first_and_keeps_the_rest(october):
    workspace = october
    at = datetime(2026, 10, 1, tzinfo=timezone.utc)
    never = credits_grant(workspace, D(2), actor="staff", note="welcome", now=at)
    soon = credits_grant(workspace, D(1), actor="staff", expires_at=datetime(2026, 12, 1, tzinfo=timezone.utc), now=at)
    later = credits_grant(workspace, D(1), actor="staff", expires_at=datetime(2027, 1, 1, tzinfo=timezone.utc), now=at)
    preview = statement_preview(workspace, now=datetime(2026, 11, 1, 12, tzinfo=timezone.utc))[0]
    assert preview.built.credits_applied == D("3.50")
    assert not CreditEntry.objects.filter(kind="consumption").exists()  # the preview consumes nothing
    statement, created = statement_close(workspace, OCT, now=CLOSED)
    assert created and statement.credits_applied == D("3.50") and statement.total == 0
    assert statement.lines.get(kind="credits").amount == D("-3.50")
    consumed = dict(CreditEntry.objects.filter(statement=statement, kind="consumption").values_list("lot_id", "amount"))
    assert consumed == {soon.pk: D(-1), later.pk: D(-1), never.pk: D("-1.5")}
    never.refresh_from_db()
    assert never.remaining == D("0.5") and credit_balance(workspace.pk) == D("0.5")
    assert_ledger_consistent(workspace)


def test_a_close_rolled_back_consumes_nothing(october):
    credits_grant(october, D(10), actor="staff", now=datetime(2026, 10, 1, tzinfo=timezone.utc))
    with mock.patch("billing.close.invoices_issue", side_effect=RuntimeError("crash at the end of the close")):
        with pytest.raises(RuntimeError):
            statement_close(october, OCT, now=CLOSED)
    assert not Statement.objects.exists()
    assert credit_balance(october.pk) == D(10) and not CreditEntry.objects.filter(kind="consumption").exists()
    statement, _ = statement_close(october, OCT, now=CLOSED)
    assert statement.credits_applied == D("3.50") and credit_balance(october.pk) == D("6.50")


def test_a_reissue_gives_the_consumption_back_once_and_consumes_again(october):
    credits_grant(october, D(2), actor="staff", now=datetime(2026, 10, 1, tzinfo=timezone.utc))
    original, _ = statement_close(october, OCT, now=CLOSED)
    assert original.credits_applied == D(2) and original.total == D("1.50")
    credits_grant(october, D(1), actor="staff", now=CLOSED)  # granted after the close
    replacement = statement_void_and_reissue(original, actor="staff", reason="test", now=CLOSED + timedelta(hours=1))
    assert CreditEntry.objects.filter(statement=original, kind="reversal").aggregate(s=Sum("amount"))["s"] == D(2)
    assert replacement.credits_applied == D("3.00") and replacement.total == D("0.50")
    assert credit_balance(october.pk) == 0
    with pytest.raises(CloseRefused):
        statement_void_and_reissue(original, actor="staff", reason="again", now=CLOSED + timedelta(hours=2))
    assert CreditEntry.objects.filter(kind="reversal").count() == 1
    assert_ledger_consistent(october)


def test_expiry_removes_what_is_left_once(workspace):
    at = datetime(2026, 10, 1, tzinfo=timezone.utc)
    credits_grant(workspace, D(5), actor="staff", expires_at=datetime(2026, 10, 15, tzinfo=timezone.utc), now=at)
    credits_grant(workspace, D(2), actor="staff", now=at)
    assert credits_expire_due(now=datetime(2026, 10, 14, tzinfo=timezone.utc)) == 0
    assert credits_expire_due(now=datetime(2026, 10, 16, tzinfo=timezone.utc)) == 1
    assert credits_expire_due(now=datetime(2026, 10, 17, tzinfo=timezone.utc)) == 0
    assert credit_balance(workspace.pk) == D(2)
    assert list(CreditEntry.objects.filter(kind="expiry").values_list("amount", flat=True)) == [D(-5)]
    assert_ledger_consistent(workspace)


def test_a_grant_is_validated(workspace):
    from billing.credits import CreditsInvalid

    with pytest.raises(CreditsInvalid):
        credits_grant(workspace, D(0), actor="staff")
    with pytest.raises(CreditsInvalid):
        credits_grant(workspace, D(1), actor="staff", expires_at=datetime(2020, 1, 1, tzinfo=timezone.utc))


# --- API ----------------------------------------------------------------------------------------


def test_the_credits_api_shows_the_live_balance_scoped_to_the_workspace(workspace, api_key, api, other_api):
    credits_grant(workspace, D(10), actor="staff", note="promo")
    ingest(workspace, api_key, [event(quantity=500)])  # 2.00 USD this month, not billed yet
    body = api.get("/api/v1/credits").json()
    assert body["balance"] == "10.000000" and body["available"] == "10.000000"
    assert body["unbilled_spend"] == "2.000000" and body["live_balance"] == "8.000000"
    assert [lot["note"] for lot in body["lots"]] == ["promo"]
    assert [entry["kind"] for entry in body["entries"]] == ["grant"]
    assert body["currency"] == "USD"  # as every other amount of the API says it (it said "usd")
    other = other_api.get("/api/v1/credits").json()
    assert other["balance"] == "0.000000" and other["lots"] == [] and other["entries"] == []


@pytest.mark.parametrize("amount", ["4.99", "10000.01", "abc", "5.001", None])
def test_a_purchase_out_of_range_is_a_400_on_the_field(api, amount, local_stripe):
    response = api.post("/api/v1/credits/purchase", {} if amount is None else {"amount": amount}, format="json")
    assert response.status_code == 400 and "amount" in response.json()
    assert not CreditPurchase.objects.exists()


def test_auto_recharge_settings_are_validated_and_saved(api):
    bad = api.put("/api/v1/credits/auto-recharge", {"enabled": True, "threshold": "-1", "amount": "2", "max_per_day": 0}, format="json")
    assert bad.status_code == 400 and {"threshold", "amount", "max_per_day"} <= set(bad.json())
    good = api.put("/api/v1/credits/auto-recharge", {"enabled": False, "threshold": "5", "amount": "20", "max_per_day": 2}, format="json")
    assert good.status_code == 200, good.content
    assert api.get("/api/v1/credits/auto-recharge").json() == {
        "enabled": False, "threshold": "5.00", "amount": "20.00", "max_per_day": 2, "disabled_reason": ""
    }


# --- Purchases through localstripe -------------------------------------------------------------


def test_a_purchase_grants_its_lot_once_even_when_the_webhook_reports_it_too(workspace, api, local_stripe):
    cards.payment_method_set(workspace, "pm_card_visa")
    response = api.post("/api/v1/credits/purchase", {"amount": "25.00"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "succeeded" and body["amount_cents"] == 2500 and body["lot"], body
    purchase = CreditPurchase.objects.get()
    assert purchase.idempotency_key == f"credit_purchase:{purchase.pk}"
    (intent,) = local_stripe.payment_intents(customer=workspace.stripe_customer.customer_id)
    assert intent["amount"] == 2500 and intent["metadata"]["credit_purchase_id"] == str(purchase.pk)
    for n in range(2):  # the webhook, delivered twice
        webhook_event_receive({"id": f"evt_{n}", "type": "payment_intent.succeeded", "data": {"object": intent}})
    assert CreditLot.objects.get().amount == D(25) and credit_balance(workspace.pk) == D(25)
    assert_ledger_consistent(workspace)


def test_a_declined_purchase_grants_nothing(workspace, api, local_stripe):
    cards.payment_method_set(workspace, "pm_card_chargeCustomerFail")
    body = api.post("/api/v1/credits/purchase", {"amount": "10"}, format="json").json()
    assert body["status"] == "failed" and body["lot"] is None and body["error"]
    assert credit_balance(workspace.pk) == 0


def test_a_purchase_without_a_card_fails_without_calling_stripe(workspace, api, local_stripe):
    body = api.post("/api/v1/credits/purchase", {"amount": "10"}, format="json").json()
    assert body["status"] == "failed" and body["failure_code"] == "no_card"
    assert local_stripe.get("/v1/payment_intents").json()["data"] == []


def test_a_lost_answer_is_reconciled_and_granted_once(workspace, local_stripe):
    cards.payment_method_set(workspace, "pm_card_visa")
    real = credit_purchases._intent_create

    def lost(purchase):
        real(purchase)  # Stripe charged, the answer never came back
        return credit_purchases.Outcome("started", error="read timeout", delivery="unknown")

    with mock.patch.object(credit_purchases, "_intent_create", lost):
        purchase = credit_purchases.credit_purchase(workspace, D(15), actor="test")
    assert purchase.status == "started" and credit_balance(workspace.pk) == 0
    assert credit_purchases.credit_purchases_reconcile() == 1
    purchase.refresh_from_db()
    assert purchase.status == "succeeded" and credit_balance(workspace.pk) == D(15)
    assert len(local_stripe.payment_intents(customer=workspace.stripe_customer.customer_id)) == 1


# --- Auto-recharge -------------------------------------------------------------------------------


def test_concurrent_triggers_recharge_once_per_crossing(transactional_db, workspace, api_key, local_stripe):
    cards.payment_method_set(workspace, "pm_card_visa")
    credits_grant(workspace, D(3), actor="staff")
    auto_recharge_set(workspace, enabled=True, threshold=D(5), amount=D(20), max_per_day=3)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def trigger() -> None:
        try:
            barrier.wait(timeout=10)
            credits_auto_recharge(workspace.pk)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=trigger) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(local_stripe.payment_intents(customer=workspace.stripe_customer.customer_id)) == 1
    assert credit_balance(workspace.pk) == D(23)
    # Still above the threshold: nothing. Spending below it again is a new crossing, charged once.
    assert credits_auto_recharge(workspace.pk) is None
    ingest(workspace, api_key, [event(quantity=5000)])  # 20.00 USD: live balance 3.00
    assert credits_auto_recharge(workspace.pk).status == "succeeded"
    assert credits_auto_recharge(workspace.pk) is None  # same crossing
    assert credit_summary(workspace).live_balance == D(23)
    assert list(CreditPurchase.objects.order_by("crossing").values_list("crossing", flat=True)) == [1, 2]


def test_a_declined_recharge_disables_itself_until_a_new_card(workspace, local_stripe, mailoutbox, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    cards.payment_method_set(workspace, "pm_card_chargeCustomerFail")
    auto_recharge_set(workspace, enabled=True, threshold=D(5), amount=D(20), max_per_day=3)
    purchase = credits_auto_recharge(workspace.pk)
    assert purchase.status == "failed"
    settings_row = AutoRecharge.objects.get()
    assert not settings_row.enabled and settings_row.disabled_reason
    assert credits_auto_recharge(workspace.pk) is None
    from billing.credits import CreditsInvalid

    with pytest.raises(CreditsInvalid):
        auto_recharge_set(workspace, enabled=True, threshold=D(5), amount=D(20), max_per_day=3)
    cards.payment_method_set(workspace, "pm_card_visa")
    settings_row.refresh_from_db()
    assert settings_row.enabled and settings_row.armed and not settings_row.disabled_reason
    assert credits_auto_recharge(workspace.pk).status == "succeeded"
    assert credit_balance(workspace.pk) == D(20)


def test_at_most_max_per_day_recharges(workspace, api_key, local_stripe):
    cards.payment_method_set(workspace, "pm_card_visa")
    auto_recharge_set(workspace, enabled=True, threshold=D(5), amount=D(5), max_per_day=1)
    assert credits_auto_recharge(workspace.pk).status == "succeeded"  # 0 → 5: at the threshold, armed again
    assert credits_auto_recharge(workspace.pk) is None
    ingest(workspace, api_key, [event(quantity=500)])  # 2.00: below again, a new crossing
    assert credits_auto_recharge(workspace.pk) is None  # but one a day
    assert CreditPurchase.objects.count() == 1


def test_recharge_notices_go_by_e_mail_and_to_the_event_stream(
    workspace, local_stripe, mailoutbox, celery_eager, django_capture_on_commit_callbacks
):
    from notifications.models import Event
    from notifications.schemas import data_errors

    cards.payment_method_set(workspace, "pm_card_chargeCustomerFail")
    auto_recharge_set(workspace, enabled=True, threshold=D(5), amount=D(20), max_per_day=3)
    with django_capture_on_commit_callbacks(execute=True):
        purchase = credits_auto_recharge(workspace.pk)
    assert purchase.status == "failed"
    assert sorted(m.subject for m in mailoutbox) == [
        "[Meterboard] Auto-recharge failed and is now off", "[Meterboard] Credit balance below 5.00 USD"]
    assert all(m.to == ["owner@acme.test"] for m in mailoutbox) and "new card" in mailoutbox[0].body + mailoutbox[1].body
    events = {e.type: e for e in Event.objects.filter(workspace=workspace)}
    assert set(events) == {"credits.low", "credits.recharge_failed"}
    assert events["credits.recharge_failed"].data["amount"] == "20.000000" and events["credits.recharge_failed"].data["reason"]
    assert events["credits.low"].data == {"balance": "0.000000", "threshold": "5.000000", "currency": "USD"}
    cards.payment_method_set(workspace, "pm_card_visa")
    mailoutbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert credits_auto_recharge(workspace.pk).status == "succeeded"
    recharged = Event.objects.get(workspace=workspace, type="credits.recharged")
    assert recharged.data["amount"] == "20.000000" and recharged.data["balance"] == "20.000000"
    assert recharged.data["source"] == "auto_recharge"
    assert "[Meterboard] Credits recharged: 20.00 USD" in [m.subject for m in mailoutbox]
    for published in Event.objects.filter(workspace=workspace):
        assert data_errors(published.type, published.version, published.data) == [], published.type
    assert Event.objects.filter(workspace=workspace, type="credits.low").count() == 2  # one per crossing


def test_staff_refund_what_is_left_of_a_purchase_to_the_card(workspace, october, local_stripe):
    from billing.credit_refunds import RefundRefused, credit_lot_refund

    cards.payment_method_set(workspace, "pm_card_visa")
    purchase = credit_purchases.credit_purchase(workspace, D(5), actor="test", now=datetime(2026, 10, 5, tzinfo=timezone.utc))
    statement, _ = statement_close(workspace, OCT, now=CLOSED)  # consumes 3.50 of the 5.00
    assert statement.credits_applied == D("3.50")
    refund = credit_lot_refund(purchase.lot, actor="staff")
    assert refund.status == "succeeded" and refund.amount_cents == 150 and refund.stripe_refund_id.startswith("re_")
    assert credit_balance(workspace.pk) == 0
    held = local_stripe.get(f"/v1/payment_intents/{purchase.payment_intent_id}").json()
    charge = local_stripe.get(f"/v1/charges/{held['latest_charge'] if isinstance(held['latest_charge'], str) else held['latest_charge']['id']}").json()
    assert charge["amount_refunded"] == 150
    with pytest.raises(RefundRefused):
        credit_lot_refund(purchase.lot, actor="staff")  # nothing left
    with pytest.raises(RefundRefused):
        credit_lot_refund(credits_grant(workspace, D(3), actor="staff"), actor="staff")  # granted, not bought
    assert_ledger_consistent(workspace)


def test_staff_grant_credits_in_the_admin(workspace, client):
    from django.contrib.auth import get_user_model

    client.force_login(get_user_model().objects.create_superuser("boss@mb.test", "boss@mb.test", "pw"))
    assert client.get("/admin/billing/creditlot/add/").status_code == 200
    response = client.post("/admin/billing/creditlot/add/", {
        "workspace": workspace.pk, "amount": "15", "expires_at_0": "2099-01-31", "expires_at_1": "00:00:00", "note": "sorry for the outage",
        "entries-TOTAL_FORMS": "0", "entries-INITIAL_FORMS": "0",
    })  # fmt: skip
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    lot = CreditLot.objects.get()
    assert (lot.source, lot.amount, lot.remaining, lot.note) == ("grant", D(15), D(15), "sorry for the outage")
    assert lot.created_by == "staff:boss@mb.test" and lot.expires_at.year == 2099
    assert list(lot.entries.values_list("kind", "amount")) == [("grant", D(15))]
    assert client.get(f"/admin/billing/creditlot/{lot.pk}/change/").status_code == 200  # read-only view
    refused = client.post("/admin/billing/creditlot/add/", {
        "workspace": workspace.pk, "amount": "-1", "expires_at_0": "2001-01-31", "expires_at_1": "00:00:00", "note": "",
        "entries-TOTAL_FORMS": "0", "entries-INITIAL_FORMS": "0",
    })  # fmt: skip
    assert refused.status_code == 200 and set(refused.context["adminform"].form.errors) == {"amount", "expires_at"}
    assert CreditLot.objects.count() == 1

"""What billing and budgets publish: each producer's event, its key, and its payload checked
against the schema of its type (notifications/schemas.py)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import notifications
from billing.close import period_close
from billing.models import Invoice, PaymentAttempt, Statement
from billing.payment_outcomes import Outcome, settle
from billing.reissue import statement_void_and_reissue
from budgets.evaluation import workspace_evaluate
from budgets.services import budget_create
from notifications.models import Event
from notifications.retention import events_prune
from notifications.schemas import data_errors
from tests.budgets.conftest import spend_events
from tests.conftest import event, ingest
from usage.services import events_ingest
from workspaces.services import api_key_create

OCT = date(2026, 10, 1)
CLOSED = datetime(2026, 11, 2, 2, 0, tzinfo=timezone.utc)
NOW = datetime(2026, 11, 21, 12, tzinfo=timezone.utc)


def assert_valid(events) -> None:
    for item in events:
        assert data_errors(item.type, item.version, item.data) == [], (item.type, item.data)


def october(workspace, api_key) -> None:
    ingest(workspace, api_key, [event(occurred_at="2026-10-03T10:00:00Z", quantity=500)],
           now=datetime(2026, 11, 1, 1, tzinfo=timezone.utc))  # fmt: skip


def test_a_close_publishes_each_statement_and_its_invoice(workspace, api_key, other_workspace):
    october(workspace, api_key)
    october(other_workspace, api_key_create(workspace=other_workspace, name="k").api_key)
    period_close(OCT, now=CLOSED)
    statement = Statement.objects.get(workspace=workspace)
    invoice = Invoice.objects.get(statement=statement)
    mine = list(Event.objects.filter(workspace=workspace))
    assert [(e.type, e.key, e.created) for e in mine] == [
        ("statement.finalized", str(statement.pk), CLOSED),
        ("invoice.created", invoice.number, CLOSED),
    ]
    assert mine[0].data == {"statement_id": statement.pk, "period": "2026-10", "total": f"{statement.total:.6f}",
                            "tax": "0.000000", "amount_due_cents": statement.amount_due_cents, "currency": "USD",
                            "finalized_at": "2026-11-02T02:00:00Z"}  # fmt: skip
    assert mine[1].data["number"] == invoice.number and mine[1].data["kind"] == "invoice"
    assert Event.objects.filter(workspace=other_workspace).count() == 2
    assert_valid(Event.objects.all())
    # A void and reissue: the credit note and the replacement's statement and invoice.
    statement_void_and_reissue(statement, actor="test", reason="wrong", now=CLOSED + timedelta(days=1))
    later = Event.objects.filter(workspace=workspace, created__gt=CLOSED)
    assert sorted(later.values_list("type", "data__kind")) == [
        ("invoice.created", "credit_note"), ("invoice.created", "invoice"), ("statement.finalized", None)
    ]  # fmt: skip
    assert_valid(Event.objects.all())


def _attempt(statement, number=1) -> PaymentAttempt:
    return PaymentAttempt.objects.create(statement=statement, number=number, amount_cents=statement.amount_due_cents,
                                         idempotency_key=f"test:{statement.pk}:{number}")  # fmt: skip


def test_payment_outcomes_publish_succeeded_and_failed(workspace, api_key):
    october(workspace, api_key)
    period_close(OCT, now=CLOSED)
    statement = Statement.objects.get(workspace=workspace)
    failed = _attempt(statement)
    settle(statement, failed, Outcome(PaymentAttempt.Status.FAILED, "pi_1", "Your card was declined."), now=CLOSED)
    paid = _attempt(statement, 2)
    settle(statement, paid, Outcome(PaymentAttempt.Status.SUCCEEDED, "pi_2"), now=CLOSED + timedelta(days=1))
    settle(statement, paid, Outcome(PaymentAttempt.Status.SUCCEEDED, "pi_2"), now=CLOSED + timedelta(days=1))  # again
    [fail] = Event.objects.filter(type="payment.failed")
    [success] = Event.objects.filter(type="payment.succeeded")
    assert fail.data["failure_message"] == "Your card was declined."
    assert fail.data["next_retry_at"] == "2026-11-03T02:00:00Z"
    assert (success.data["amount_cents"], success.data["paid_at"]) == (statement.amount_due_cents, "2026-11-03T02:00:00Z")
    assert_valid([fail, success])


def test_budget_alerts_publish_threshold_crossed_and_forecast_exceeded(workspace, api_key):
    budget, _ = budget_create(workspace=workspace, amount=Decimal(100), thresholds=[50, 200])
    events = spend_events(60, occurred_at="2026-11-14T08:00:00Z")
    assert events_ingest(workspace=workspace, api_key=api_key, raw_events=events, now=NOW).count("accepted") == len(events)
    recorded = workspace_evaluate(workspace.pk, now=NOW).recorded
    kinds = {(a.kind, a.threshold) for a in recorded if a.budget_id}
    assert ("actual", 50) in kinds and ("forecast", 50) not in kinds
    crossed = Event.objects.get(type="budget.threshold_crossed")
    assert crossed.data == {"budget_id": budget.pk, "alert_id": crossed.data["alert_id"], "api_key": None,
                            "period": "2026-11", "threshold": 50, "budget_amount": "100.000000",
                            "spend": "60.000000", "currency": "USD"}  # fmt: skip
    assert crossed.created == NOW
    assert_valid(Event.objects.all())
    assert workspace_evaluate(workspace.pk, now=NOW).recorded == []  # recorded once, published once
    assert Event.objects.filter(type="budget.threshold_crossed").count() == 1


def test_no_producer_publishes_a_key_again_once_retention_deleted_its_event(workspace, api_key):
    """Retention forgets an event's (workspace, type, key): publish() itself would record that key
    again. The producers never ask: each publishes with the row it creates (a statement, an
    invoice, a payment attempt's outcome, an alert), and a re-run finds that row and publishes
    nothing (README, "Event stream and workspace webhooks", Retention)."""
    october(workspace, api_key)
    period_close(OCT, now=CLOSED)
    statement = Statement.objects.get(workspace=workspace)
    failed = _attempt(statement)
    declined = Outcome(PaymentAttempt.Status.FAILED, "pi_1", "Your card was declined.")
    settle(statement, failed, declined, now=CLOSED)
    budget_create(workspace=workspace, amount=Decimal(100), thresholds=[50])
    events_ingest(workspace=workspace, api_key=api_key, raw_events=spend_events(60, occurred_at="2026-11-14T08:00:00Z"), now=NOW)
    workspace_evaluate(workspace.pk, now=NOW)
    types = {"statement.finalized", "invoice.created", "payment.failed", "budget.threshold_crossed"}
    assert set(Event.objects.values_list("type", flat=True)) == types

    later = NOW + timedelta(days=60)
    assert events_prune(now=later).events == 4 and not Event.objects.exists()
    assert notifications.publish(workspace.pk, "payment.failed", {}, key=f"attempt:{failed.pk}") is not None  # the service forgot
    Event.objects.all().delete()

    period_close(OCT, now=later)  # the month's close again: its statement is there
    settle(statement, failed, declined, now=later)  # the attempt's outcome again
    assert workspace_evaluate(workspace.pk, now=NOW).recorded == []  # the alert is there
    assert not Event.objects.exists()

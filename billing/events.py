"""What billing tells the event stream (notifications): statements finalized, invoices issued,
payments succeeded or failed. The `data` of each follows its schema (notifications/schemas.py);
changing a field here is a change of that contract."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from core.money import CURRENCY, decimal_text
from notifications import publish
from notifications.services import Publication, publish_many

from .models import Invoice, PaymentAttempt, Statement


def _time(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat().replace("+00:00", "Z")


def _statement_finalized(statement: Statement) -> Publication:
    data = {
        "statement_id": statement.pk,
        "period": f"{statement.period:%Y-%m}",
        "total": decimal_text(statement.total),
        "tax": decimal_text(statement.tax),
        "amount_due_cents": statement.amount_due_cents,
        "currency": CURRENCY,
        "finalized_at": _time(statement.finalized_at),
    }
    return Publication(statement.workspace_id, "statement.finalized", data, key=str(statement.pk), created=statement.finalized_at)


def _invoice_created(invoice: Invoice, statement: Statement) -> Publication:
    data = {
        "number": invoice.number,
        "kind": invoice.kind,
        "statement_id": statement.pk,
        "period": f"{statement.period:%Y-%m}",
        "total": decimal_text(statement.total),
        "currency": CURRENCY,
        "issued_at": _time(invoice.issued_at),
    }
    return Publication(statement.workspace_id, "invoice.created", data, key=invoice.number, created=invoice.issued_at)


def statements_closed_publish(statements: Sequence[Statement], invoices: Sequence[Invoice]) -> None:
    """statement.finalized for each statement and invoice.created for each invoice just stored,
    in the close's transaction, in a few queries whatever their number."""
    by_id = {statement.pk: statement for statement in statements}
    publish_many(
        [_statement_finalized(statement) for statement in statements]
        + [_invoice_created(invoice, by_id[invoice.statement_id]) for invoice in invoices]
    )


def credit_note_publish(credit_note: Invoice, statement: Statement) -> None:
    publish_many([_invoice_created(credit_note, statement)])


def payment_succeeded_publish(statement: Statement, attempt: PaymentAttempt, *, now: datetime) -> None:
    data = {
        "statement_id": statement.pk,
        "period": f"{statement.period:%Y-%m}",
        "amount_cents": attempt.amount_cents,
        "currency": CURRENCY,
        "paid_at": _time(statement.paid_at or now),
    }
    publish(statement.workspace_id, "payment.succeeded", data, key=f"attempt:{attempt.pk}", created=now)


def payment_failed_publish(statement: Statement, attempt: PaymentAttempt, *, now: datetime) -> None:
    data = {
        "statement_id": statement.pk,
        "period": f"{statement.period:%Y-%m}",
        "amount_cents": attempt.amount_cents,
        "currency": CURRENCY,
        "failure_message": attempt.error or attempt.get_status_display(),
        "next_retry_at": _time(statement.next_retry_at),
    }
    publish(statement.workspace_id, "payment.failed", data, key=f"attempt:{attempt.pk}", created=now)

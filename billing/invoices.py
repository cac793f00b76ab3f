"""Invoices and credit notes: numbered gap-free per year, issued with the statements they bill.

Every statement a close (or a reissue) finalizes gets its invoice in the same transaction
(`invoices_issue`, called by billing.close._store_many); voiding a statement gives its invoice a
credit note (`credit_note_issue`, in the reissue's transaction). Numbers read `MB-2026-000123`
(credit notes `MB-CN-2026-000007`), the year being the one the document is issued in (UTC).

Why there are never gaps or duplicates: a number is taken with one
`INSERT … ON CONFLICT DO UPDATE SET last = last + n RETURNING last` on the series' row for the year,
in the transaction that stores the invoices. The row stays locked until that transaction ends, so a
concurrent close waits for it and then continues from its last number; a transaction that rolls
back gives its numbers back with everything else. The unique constraints on the number and on
(kind, year, sequence) are the backstop.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from datetime import datetime, timezone

from django.conf import settings
from django.db import connection, transaction

from .events import credit_note_publish
from .models import BillingProfile, Invoice, InvoiceSequence, Statement

logger = logging.getLogger(__name__)

SERIES = {Invoice.Kind.INVOICE: "invoice", Invoice.Kind.CREDIT_NOTE: "credit_note"}


def invoice_number(kind: str, year: int, sequence: int) -> str:
    prefix = settings.INVOICE_NUMBER_PREFIX
    middle = "-CN" if kind == Invoice.Kind.CREDIT_NOTE else ""
    return f"{prefix}{middle}-{year}-{sequence:06d}"


def numbers_take(kind: str, year: int, count: int) -> range:
    """`count` consecutive numbers of `kind`'s series for `year`, locked to this transaction."""
    if count <= 0:
        return range(0)
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("Invoice numbers are taken inside the transaction that stores their invoices.")
    table = connection.ops.quote_name(InvoiceSequence._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (series, year, last) VALUES (%s, %s, %s) "
            f"ON CONFLICT (series, year) DO UPDATE SET last = {table}.last + EXCLUDED.last RETURNING last",
            [SERIES[kind], year, count],
        )
        (last,) = cursor.fetchone()
    return range(last - count + 1, last + 1)


def seller() -> dict:
    """Who issues the invoices (settings, from the INVOICE_SELLER_* variables)."""
    return dict(settings.INVOICE_SELLER)


def buyer_of(workspace, profile: BillingProfile | None) -> dict:
    """The buyer as the invoice shows it: the billing profile as it is now, else the workspace's name."""
    if profile is None:
        return {"legal_name": workspace.name, "workspace": workspace.slug}
    return {
        "legal_name": profile.legal_name or workspace.name,
        "workspace": workspace.slug,
        "address_line1": profile.address_line1,
        "address_line2": profile.address_line2,
        "city": profile.city,
        "postal_code": profile.postal_code,
        "region": profile.region,
        "country": profile.country,
        "tax_id": profile.tax_id,
    }


def invoices_issue(statements: Sequence[Statement], *, now: datetime) -> list[Invoice]:
    """An invoice for each statement just finalized, numbered in their order; in the caller's
    transaction. The e-mails go out after it commits."""
    if not statements:
        return []
    year = now.astimezone(timezone.utc).year
    profiles = {p.workspace_id: p for p in BillingProfile.objects.filter(workspace_id__in={s.workspace_id for s in statements})}
    issuer = seller()
    numbers = numbers_take(Invoice.Kind.INVOICE, year, len(statements))
    invoices = Invoice.objects.bulk_create(
        Invoice(
            statement=statement, kind=Invoice.Kind.INVOICE, number=invoice_number(Invoice.Kind.INVOICE, year, n),
            year=year, sequence=n, issued_at=now, seller=issuer,
            buyer=buyer_of(statement.workspace, profiles.get(statement.workspace_id)),
        )
        for statement, n in zip(statements, numbers, strict=True)
    )
    transaction.on_commit(functools.partial(_emails_enqueue, [invoice.pk for invoice in invoices], "invoice_email_send"))
    return invoices


def credit_note_issue(statement: Statement, *, now: datetime) -> Invoice | None:
    """The credit note cancelling a voided statement's invoice (None when it had none: voided
    before invoices existed). In the caller's transaction; the replacement's e-mail carries it."""
    original = Invoice.objects.filter(statement=statement, kind=Invoice.Kind.INVOICE).first()
    if original is None:
        return None
    year = now.astimezone(timezone.utc).year
    (n,) = numbers_take(Invoice.Kind.CREDIT_NOTE, year, 1)
    credit_note = Invoice.objects.create(
        statement=statement, kind=Invoice.Kind.CREDIT_NOTE, number=invoice_number(Invoice.Kind.CREDIT_NOTE, year, n),
        year=year, sequence=n, issued_at=now, seller=original.seller, buyer=original.buyer, cancels=original,
    )
    credit_note_publish(credit_note, statement)
    return credit_note


def receipt_emails_after_commit(statement: Statement) -> None:
    """Once the payment is committed: a receipt to the billing e-mails (billing.invoice_emails)."""
    invoice = Invoice.objects.filter(statement=statement, kind=Invoice.Kind.INVOICE).first()
    if invoice is not None:
        transaction.on_commit(functools.partial(_emails_enqueue, [invoice.pk], "receipt_email_send"))


def _emails_enqueue(invoice_ids: list[int], task: str) -> None:
    from .invoice_emails import emails_enqueue

    try:
        emails_enqueue(invoice_ids, task)
    except Exception:  # the broker down must not undo or stop billing
        logger.exception("Could not enqueue the %s e-mails of invoices %s", task, invoice_ids[:10])


def invoice_of(statement: Statement) -> Invoice | None:
    return next((i for i in statement.invoices.all() if i.kind == Invoice.Kind.INVOICE), None)


def credit_note_of(statement: Statement) -> Invoice | None:
    return next((i for i in statement.invoices.all() if i.kind == Invoice.Kind.CREDIT_NOTE), None)

"""E-mails about invoices: "your statement is ready" with the invoice PDF attached (and, for a
reissue, the credit note of the statement it replaces), and the receipt once it is paid.

They go to the workspace's billing e-mails (its billing profile), else to its owners and admins;
one task per address (billing.tasks), enqueued after the invoice's transaction commits, so billing
never waits for a mail server. An invoice whose e-mails could not be enqueued (the broker down at
the commit) is found by the hourly sweep (`invoice_emails_sweep`), so none is lost.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.core.mail import EmailMultiAlternatives, get_connection
from django.template.loader import render_to_string
from django.utils import timezone as dj_timezone

from core.jobs import enqueue
from core.money import usd, usd_cents
from workspaces.contacts import dashboard_url, owner_and_admin_emails

from .invoice_pdf import invoice_pdf, pdf_filename
from .models import BillingProfile, Invoice, Statement

TASKS = ("invoice_email_send", "receipt_email_send")


def recipients_of(workspace_id: int) -> list[str]:
    """The billing profile's e-mails, else the owners' and admins'."""
    profile = BillingProfile.objects.filter(workspace_id=workspace_id).first()
    if profile is not None and profile.billing_emails:
        return list(dict.fromkeys(profile.billing_emails))
    return owner_and_admin_emails(workspace_id)


def emails_enqueue(invoice_ids: list[int], task: str) -> int:
    """One task per invoice and address; marks the invoices' e-mails as enqueued (for the statement
    e-mail). Returns how many were enqueued."""
    if task not in TASKS:
        raise ValueError(f"Unknown invoice e-mail task {task!r}")
    sent = 0
    for invoice in Invoice.objects.filter(pk__in=invoice_ids).select_related("statement"):
        for address in recipients_of(invoice.statement.workspace_id):
            enqueue(f"billing.tasks.{task}", invoice.pk, address)
            sent += 1
        if task == "invoice_email_send":
            Invoice.objects.filter(pk=invoice.pk, emails_enqueued_at__isnull=True).update(emails_enqueued_at=dj_timezone.now())
    return sent


def invoice_emails_sweep(*, now: datetime | None = None) -> int:
    """Enqueue the statement e-mails of invoices issued over 10 minutes ago whose e-mails were never
    enqueued (the broker was down when they committed). Returns how many invoices."""
    now = now or dj_timezone.now()
    ids = list(
        Invoice.objects.filter(
            kind=Invoice.Kind.INVOICE, emails_enqueued_at__isnull=True,
            issued_at__lt=now - timedelta(minutes=10), issued_at__gte=now - timedelta(days=7),
        ).values_list("pk", flat=True)[:1000]
    )  # fmt: skip
    if ids:
        emails_enqueue(ids, "invoice_email_send")
    return len(ids)


def _send(subject: str, text: str, html: str, address: str, attachments: list[tuple[str, bytes]]) -> None:
    message = EmailMultiAlternatives(subject, text, to=[address])
    message.attach_alternative(html, "text/html")
    for name, content in attachments:
        message.attach(name, content, "application/pdf")
    get_connection().send_messages([message])


def _context(invoice: Invoice) -> dict:
    statement = invoice.statement
    return {
        "invoice": invoice,
        "statement": statement,
        "workspace": statement.workspace,
        "period": statement.period,
        "total": usd(statement.total),
        "amount_due": usd_cents(statement.amount_due_cents),
        "carried": statement.carried_forward > 0,
        "dashboard_url": dashboard_url(statement.workspace),
    }


def invoice_email_send(invoice_id: int, address: str) -> bool:
    """"Your statement is ready", the invoice attached; for a reissue, with the credit note of the
    statement it replaces. Not sent (False) when the statement was voided since."""
    invoice = Invoice.objects.select_related("statement__workspace", "statement__reissue_of").get(pk=invoice_id)
    statement = invoice.statement
    if statement.status == Statement.Status.VOID:
        return False
    attachments = [(pdf_filename(invoice), invoice_pdf(invoice))]
    replaced = None
    if statement.reissue_of_id is not None:
        replaced = Invoice.objects.filter(statement_id=statement.reissue_of_id, kind=Invoice.Kind.CREDIT_NOTE).first()
        if replaced is not None:
            attachments.append((pdf_filename(replaced), invoice_pdf(replaced)))
    context = {**_context(invoice), "credit_note": replaced}
    subject = render_to_string("billing/emails/invoice_subject.txt", context).strip()
    _send(subject, render_to_string("billing/emails/invoice.txt", context),
          render_to_string("billing/emails/invoice.html", context), address, attachments)  # fmt: skip
    return True


def receipt_email_send(invoice_id: int, address: str) -> bool:
    """The receipt of a paid statement, its invoice attached (now marked paid). Not sent (False)
    unless the statement is paid."""
    invoice = Invoice.objects.select_related("statement__workspace").get(pk=invoice_id)
    statement = invoice.statement
    if statement.status != Statement.Status.PAID:
        return False
    paid = statement.payment_attempts.filter(status="succeeded").order_by("-number").first()
    context = {**_context(invoice), "paid_at": statement.paid_at, "amount_paid": usd_cents(paid.amount_cents if paid else statement.amount_due_cents)}
    subject = render_to_string("billing/emails/receipt_subject.txt", context).strip()
    _send(subject, render_to_string("billing/emails/receipt.txt", context),
          render_to_string("billing/emails/receipt.html", context), address, [(pdf_filename(invoice), invoice_pdf(invoice))])  # fmt: skip
    return True

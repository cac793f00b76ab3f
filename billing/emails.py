"""E-mails about payments, to the workspace's owners and admins (text and HTML).

Sent by a Celery task, one message per person (billing.tasks.payment_failed_email_send, retried
while the mail server fails), enqueued after the failure is committed: billing never waits for a
mail server, and a mail server down loses no e-mail.
"""

from __future__ import annotations

from django.core.mail import EmailMultiAlternatives, get_connection
from django.template.loader import render_to_string

from core.jobs import enqueue
from core.money import usd_cents
from workspaces.contacts import dashboard_url, owner_and_admin_emails

from .models import PaymentAttempt, Statement


def payment_failed_emails_enqueue(statement_id: int, attempt_id: int, workspace_id: int) -> int:
    """One e-mail task per owner and admin of the workspace (so that a retry resends to nobody who
    got it, and nobody sees the others' addresses). Returns how many were enqueued."""
    recipients = owner_and_admin_emails(workspace_id)
    for address in recipients:
        enqueue("billing.tasks.payment_failed_email_send", statement_id, attempt_id, address)
    return len(recipients)


def payment_failed_email_send(statement_id: int, attempt_id: int, address: str) -> bool:
    """Tell one owner or admin that a statement could not be charged, why, and what to do. Not
    sent (False) once the statement is no longer `payment_failed` (paid since, or voided): the news
    would be stale. Raises what the mail backend raises."""
    statement = Statement.objects.select_related("workspace").get(pk=statement_id)
    if statement.status != Statement.Status.PAYMENT_FAILED:
        return False
    attempt = PaymentAttempt.objects.get(pk=attempt_id)
    context = {
        "workspace": statement.workspace,
        "period": statement.period,
        "amount": usd_cents(attempt.amount_cents),
        "reason": attempt.error,
        "no_card": attempt.failure_code == PaymentAttempt.FailureCode.NO_CARD,
        "next_retry_at": statement.next_retry_at,
        "dashboard_url": dashboard_url(statement.workspace),
    }
    subject = render_to_string("billing/emails/payment_failed_subject.txt", context).strip()
    text = render_to_string("billing/emails/payment_failed.txt", context)
    html = render_to_string("billing/emails/payment_failed.html", context)
    message = EmailMultiAlternatives(subject, text, to=[address])
    message.attach_alternative(html, "text/html")
    get_connection().send_messages([message])
    return True

"""E-mails about payments, to the workspace's owners and admins (text and HTML)."""

from __future__ import annotations

from django.core.mail import EmailMultiAlternatives, get_connection
from django.template.loader import render_to_string

from core.money import usd_cents
from workspaces.contacts import dashboard_url, owner_and_admin_emails

from .models import PaymentAttempt, Statement


def payment_failed_send(statement_id: int, attempt_id: int) -> int:
    """Tell the owners and admins that a statement could not be charged, why, and what to do.
    One message per person, so that members do not see each other's addresses. Returns the count."""
    statement = Statement.objects.select_related("workspace").get(pk=statement_id)
    attempt = PaymentAttempt.objects.get(pk=attempt_id)
    recipients = owner_and_admin_emails(statement.workspace_id)
    if not recipients:
        return 0
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
    messages = []
    for address in recipients:
        message = EmailMultiAlternatives(subject, text, to=[address])
        message.attach_alternative(html, "text/html")
        messages.append(message)
    return get_connection().send_messages(messages) or 0

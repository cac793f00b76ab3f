"""E-mails about payments, to the workspace's owners and admins (text and HTML)."""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.template.loader import render_to_string
from django.urls import reverse

from workspaces.models import Membership, Workspace

from .models import PaymentAttempt, Statement


def billing_recipients(workspace: Workspace) -> list[str]:
    """The e-mail addresses of the workspace's owners and admins."""
    emails = (
        Membership.objects.filter(workspace=workspace, role__in=[Membership.Role.OWNER, Membership.Role.ADMIN])
        .exclude(user__email="")
        .order_by("created_at")
        .values_list("user__email", flat=True)
    )
    return list(dict.fromkeys(emails))


def dashboard_url(workspace: Workspace) -> str:
    return f"{settings.SITE_URL}{reverse('dashboard:overview')}?{urlencode({'workspace': workspace.slug})}"


def payment_failed_send(statement_id: int, attempt_id: int) -> int:
    """Tell the owners and admins that a statement could not be charged, why, and what to do.
    One message per person, so that members do not see each other's addresses. Returns the count."""
    statement = Statement.objects.select_related("workspace").get(pk=statement_id)
    attempt = PaymentAttempt.objects.get(pk=attempt_id)
    recipients = billing_recipients(statement.workspace)
    if not recipients:
        return 0
    cents = attempt.amount_cents
    context = {
        "workspace": statement.workspace,
        "period": statement.period,
        "amount": f"${cents // 100:,}.{cents % 100:02d}",
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

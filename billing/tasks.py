"""Celery tasks for billing. Thin: they take ids, call a service, and return a summary.

Their schedule is in config/schedule.py.
"""

from __future__ import annotations

import smtplib

from celery import shared_task
from django.utils import timezone as dj_timezone

from core.periods import current_period, previous_month

from . import emails, invoice_emails, payments
from .errors import CloseRefused
from .month_end import period_close_and_charge
from .stripe_api import PaymentsNotConfigured


# Closing and charging are idempotent, so a retry after a crash or a lost database connection
# finishes what is missing. CloseRefused needs a person. Each run is recorded (the staff page), and
# staff are e-mailed when it fails for good; the next month's close catches up on this one anyway.
@shared_task(
    bind=True,
    acks_late=True,
    autoretry_for=(Exception,),
    dont_autoretry_for=(CloseRefused, PaymentsNotConfigured),
    retry_backoff=300,
    retry_backoff_max=3 * 3600,
    max_retries=6,
)
def period_close_and_charge_previous_month(self) -> dict:
    """Close the previous UTC month for every workspace (and, first, any earlier month still open),
    then charge what is due."""
    now = dj_timezone.now()
    period = previous_month(current_period(now))
    done = period_close_and_charge(
        period, now=now,
        failure_is_final=lambda exc: isinstance(exc, (CloseRefused, PaymentsNotConfigured)) or self.request.retries >= self.max_retries,
    )  # fmt: skip
    closed, charged = done.closed, done.charged
    return {
        "period": f"{period:%Y-%m}",
        "finalized": closed.created,
        "caught_up": {f"{month:%Y-%m}": n for month, n in closed.caught_up.items()},
        "already_closed": closed.already_closed,
        "charges": charged.as_dict(),
    }


# Every minute (config/schedule.py), and cheap when there is nothing to do. Not retried by Celery:
# the next minute's run is the retry.
@shared_task(acks_late=True)
def payments_retry_due() -> dict:
    """Send again charges that never reached Stripe, reconcile those whose answer was lost, and
    retry declined statements whose next retry has come."""
    return payments.payments_retry_due().as_dict()


@shared_task(acks_late=True, autoretry_for=(Exception,), retry_backoff=60, max_retries=3, expires=24 * 3600)
def payments_retry_workspace(workspace_id: int) -> dict:
    """Charge a workspace's payment_failed statements now: a card was just added."""
    return payments.payments_retry_workspace(workspace_id).as_dict()


# One e-mail to one owner or admin, enqueued after a payment failure is committed
# (billing.payment_outcomes). A mail server that refuses or does not answer (SMTP and socket errors)
# is tried again up to 6 times, after at most 1, 2, 4, 8, 16 and 30 minutes (Celery's backoff, with
# jitter so that the e-mails of a whole close do not come back at once); then it is given up.
@shared_task(
    acks_late=True, autoretry_for=(smtplib.SMTPException, OSError), retry_backoff=60, retry_backoff_max=30 * 60, max_retries=6
)
def payment_failed_email_send(statement_id: int, attempt_id: int, address: str) -> bool:
    """Tell one owner or admin that a statement could not be charged (unless paid since)."""
    return emails.payment_failed_email_send(statement_id, attempt_id, address)


# Invoice e-mails: one to one address, enqueued after the invoice (or the payment) is committed
# (billing.invoices). Retried like the payment-failure e-mails.
@shared_task(
    acks_late=True, autoretry_for=(smtplib.SMTPException, OSError), retry_backoff=60, retry_backoff_max=30 * 60, max_retries=6
)
def invoice_email_send(invoice_id: int, address: str) -> bool:
    """"Your statement is ready", with the invoice PDF (unless the statement was voided since)."""
    return invoice_emails.invoice_email_send(invoice_id, address)


@shared_task(
    acks_late=True, autoretry_for=(smtplib.SMTPException, OSError), retry_backoff=60, retry_backoff_max=30 * 60, max_retries=6
)
def receipt_email_send(invoice_id: int, address: str) -> bool:
    """The receipt of a paid statement, with its invoice marked paid."""
    return invoice_emails.receipt_email_send(invoice_id, address)


# Hourly (config/schedule.py): the statement e-mails of invoices whose enqueueing failed.
@shared_task(acks_late=True)
def invoice_emails_sweep() -> int:
    return invoice_emails.invoice_emails_sweep()


# --- Prepaid credits ---------------------------------------------------------------------------


# Enqueued when ingestion moves spend (after the budgets' evaluation, coalesced per workspace) and
# when auto-recharge is enabled or a card added. One recharge per crossing whatever runs at once
# (billing.auto_recharge), so a retry or a duplicate is harmless; short-lived: the every-minute
# job checks again anyway.
@shared_task(acks_late=True, expires=300)
def credits_auto_recharge(workspace_id: int) -> dict:
    """Recharge the workspace's credits if its live balance crossed below the threshold."""
    from .auto_recharge import credits_auto_recharge as recharge

    purchase = recharge(workspace_id)
    return {"workspace": workspace_id, "purchase": purchase.pk if purchase else None, "status": purchase.status if purchase else None}


@shared_task(acks_late=True)
def auto_recharges_check_due() -> dict:
    """Every minute: recharge every workspace whose live balance is below its threshold, and
    settle credit purchases whose answer was lost or that never reached Stripe."""
    from .auto_recharge import auto_recharges_check_due as check
    from .credit_purchases import credit_purchases_reconcile
    from .credit_refunds import credit_refunds_resend

    return {"reconciled": credit_purchases_reconcile(), "refunds": credit_refunds_resend(), "recharged": check()}


@shared_task(acks_late=True)
def credits_expire_due() -> dict:
    """Daily: write the expiry of every credit lot past its expiry date."""
    from .credits import credits_expire_due as expire

    return {"expired": expire()}


@shared_task(acks_late=True, autoretry_for=(smtplib.SMTPException, OSError), retry_backoff=60, max_retries=5)
def credit_notice_email_send(workspace_id: int, subject: str, text: str, address: str) -> bool:
    from .credit_notices import credit_notice_email_send as send

    send(workspace_id, subject, text, address)
    return True

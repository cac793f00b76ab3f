"""Every periodic Celery job, in one place, each with why and when it runs.

Kept free of Django imports: settings import it.
"""

from __future__ import annotations

import os
from datetime import timedelta

from celery.schedules import crontab


def _billing_close_day() -> int:
    raw = os.environ.get("BILLING_CLOSE_DAY", "2")
    try:
        day = int(raw)
    except ValueError:
        day = 0
    if not 1 <= day <= 28:
        raise RuntimeError(f"BILLING_CLOSE_DAY={raw!r}: choose a day of the month from 1 to 28 (every month has it).")
    return day


# The day of the month (UTC) on which the previous month is closed and charged. Not the 1st:
# the generation API may still be delivering the month's last events (they would otherwise be
# billed next month as late usage), and people get a day to look at the month before it is charged.
BILLING_CLOSE_DAY = _billing_close_day()

CELERY_BEAT_SCHEDULE: dict[str, dict] = {
    # Month-end: close the previous UTC month (one statement per workspace) and charge what is
    # due through Stripe, at 02:00 UTC on BILLING_CLOSE_DAY, a quiet hour. Closing and charging
    # are idempotent, so a late or repeated run finishes what is missing and charges nobody twice;
    # a run delayed by a stopped worker is still wanted for a week.
    "billing-close-previous-month": {
        "task": "billing.tasks.period_close_and_charge_previous_month",
        "schedule": crontab(minute=0, hour=2, day_of_month=BILLING_CLOSE_DAY),
        "options": {"expires": 7 * 24 * 3600},
    },
    # Every minute: the safety net of budget alerts. Ingestion already enqueues an evaluation of
    # the workspace whose spend changed; this catches what that cannot: a forecast that crosses a
    # threshold as the days pass with no new usage, and an evaluation whose task was lost (with a
    # worker: its workspace's pending mark expires 30 s later, and the next run asks again). Every
    # minute because alerts are promised within a minute; an evaluation is idempotent and
    # coalesced per workspace, so overlapping runs cost little. Stale after 55 s: the next one runs.
    "budgets-evaluate": {
        "task": "budgets.tasks.evaluations_request_due",
        "schedule": crontab(),
        "options": {"expires": 55},
    },
    # Every 10 seconds: the alert deliveries' schedule, which lives in the database (each delivery's
    # next_attempt_at), not in a worker's memory. Enqueues each delivery due before the next run,
    # with a countdown to its time: retries (30 s, then doubling), a delivery whose worker died
    # mid-attempt (due again 30 s after the attempt began; its claim ends sooner, 25 s with the
    # default 5 s webhook deadline), and one whose task was lost with a worker (unclaimed 30 s
    # after its time). So an alert whose worker dies still arrives within 2 minutes. Every 10 s
    # because a run is one indexed query over the deliveries still to make; stale after 10 s:
    # the next one runs.
    "budgets-deliveries-due": {
        "task": "budgets.tasks.deliveries_enqueue_due",
        "schedule": timedelta(seconds=10),
        "options": {"expires": 10},
    },
    # Spend anomaly alerts (budgets.anomalies): hourly, at 5 past, today's spend so far against each
    # workspace's and key's recent history pro-rated to the hour, so that a runaway job is told the
    # same morning; and at 00:30 UTC yesterday whole (its last hours included, late events settled
    # in the first half hour). An anomaly is recorded once per workspace, key and day, so runs
    # overlap harmlessly. Each reads 36 days of rollups in one grouped query. Stale after its period.
    "budgets-anomalies-today": {
        "task": "budgets.tasks.anomalies_check_today",
        "schedule": crontab(minute=5),
        "options": {"expires": 3600},
    },
    "budgets-anomalies-yesterday": {
        "task": "budgets.tasks.anomalies_check_yesterday",
        "schedule": crontab(minute=30, hour=0),
        "options": {"expires": 24 * 3600},
    },
    # The event stream's sweep (notifications.delivery): enqueue each workspace endpoint whose next
    # event is due (a retry, or a task lost with its worker). Every 10 s like the budgets' sweep:
    # one pass over the open deliveries; stale after 10 s, the next one runs.
    "notifications-deliveries-due": {
        "task": "notifications.tasks.endpoints_enqueue_due",
        "schedule": timedelta(seconds=10),
        "options": {"expires": 10},
    },
    # Daily at 03:30 UTC: the events table's monthly partitions, made two months ahead (a beat that
    # stops for weeks loses nothing: rows without a partition land in the DEFAULT one and move into
    # theirs when it is made), and event receipts past EVENT_RECEIPT_DAYS deleted. Idempotent;
    # several beats at once serialise on an advisory lock. Stale after a day: the next one runs.
    "usage-ledger-maintain": {
        "task": "usage.tasks.ledger_maintain",
        "schedule": crontab(minute=30, hour=3),
        "options": {"expires": 24 * 3600},
    },
    # Daily at 03:50 UTC, a quiet minute after the ledger's upkeep: the event stream's events past
    # EVENT_RETENTION_DAYS (30 by default) deleted with their deliveries and attempts, 5,000 events a
    # transaction, except those with a delivery still pending or retrying (a later run takes them).
    # Idempotent; two runs at once share the work (FOR UPDATE SKIP LOCKED). Stale after a day.
    "notifications-events-prune": {
        "task": "notifications.tasks.events_prune",
        "schedule": crontab(minute=50, hour=3),
        "options": {"expires": 24 * 3600},
    },
    # Every minute: send again the charges that never reached Stripe (it was down during the
    # close), reconcile those whose answer was lost or whose process died, and charge declined
    # statements whose next retry (1, 3 and 7 days after the first failure, see billing.payments)
    # has come. Every minute so that charges recover within a minute of Stripe answering again;
    # it costs two indexed queries when there is nothing to do. Stale after 55 s: the next one runs.
    "billing-payments-retry-due": {
        "task": "billing.tasks.payments_retry_due",
        "schedule": crontab(),
        "options": {"expires": 55},
    },
    # Every minute: auto-recharge of prepaid credits for workspaces whose live balance fell below
    # their threshold without ingestion asking (the balance expired, a close consumed it, a task
    # was lost), and the settling of credit purchases whose answer was lost or that never reached
    # Stripe, as for statement charges above. One recharge per crossing (billing.auto_recharge), so
    # overlapping runs cost nothing. Stale after 55 s: the next one runs.
    "billing-credits-auto-recharge": {
        "task": "billing.tasks.auto_recharges_check_due",
        "schedule": crontab(),
        "options": {"expires": 55},
    },
    # Daily at 00:10 UTC: the expiry of prepaid credit lots past their expiry (an EXPIRY entry for
    # what is left of each). A lot is already unusable by a close from its expiry on; this writes
    # it in the ledger. Idempotent. Stale after a day: the next one runs.
    "billing-credits-expire": {
        "task": "billing.tasks.credits_expire_due",
        "schedule": crontab(minute=10, hour=0),
        "options": {"expires": 24 * 3600},
    },
    # Hourly: the "statement ready" e-mails (invoice attached) of invoices whose e-mails could not
    # be enqueued when they committed (the broker was down), issued 10 minutes to 7 days ago.
    # Idempotent: an invoice is marked once its e-mails are enqueued. Stale after an hour.
    "billing-invoice-emails-sweep": {
        "task": "billing.tasks.invoice_emails_sweep",
        "schedule": crontab(minute=17),
        "options": {"expires": 3600},
    },
}

"""Every periodic Celery job, in one place, each with why and when it runs.

Later work adds its jobs here (budget evaluation every minute, month-end close on
BILLING_CLOSE_DAY). Kept free of Django imports: settings import it.
"""

CELERY_BEAT_SCHEDULE: dict[str, dict] = {}

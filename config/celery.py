"""The Celery app: `celery -A config worker` and `celery -A config beat`.

The broker is Redis when REDIS_URL is set; otherwise kombu's filesystem transport under
var/celery/, so a real worker and beat run on a bare checkout with no Redis.

Queues: everything runs on the default queue ("celery": evaluations, billing, e-mail) except
webhook deliveries, which go to their own queue ("webhooks") so that a slow or hostile receiver
can never delay an evaluation, a charge or an e-mail. A worker consumes only the queues `-Q`
names (the default queue without it): run one worker for "celery" and one for "webhooks"
(Procfile; scripts/run.sh starts both).

Tasks are acknowledged late (config/settings.py): a worker that dies mid-task loses nothing for
good, the broker hands its tasks out again after the visibility timeout (an hour, on Redis), and
whatever must happen sooner keeps its schedule in the database, not in a worker: budget alerts
are found again within 2 minutes of a worker's death (budgets.tasks).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

DEFAULT_QUEUE = "celery"
WEBHOOK_QUEUE = "webhooks"

app = Celery("meterboard")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_routes = {
    "budgets.tasks.webhook_delivery_send": {"queue": WEBHOOK_QUEUE},
    "notifications.tasks.endpoint_deliver": {"queue": WEBHOOK_QUEUE},
}
app.autodiscover_tasks()

from config import metrics  # noqa: E402,F401  (counts task outcomes: its Celery signal handlers)

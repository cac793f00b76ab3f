"""The Celery app: `celery -A config worker` and `celery -A config beat`.

The broker is Redis when REDIS_URL is set; otherwise kombu's filesystem transport under
var/celery/, so a real worker and beat run on a bare checkout with no Redis.

Queues: everything runs on the default queue ("celery": evaluations, billing, e-mail) except
webhook deliveries, which go to their own queue ("webhooks") so that a slow or hostile receiver
can never delay an evaluation, a charge or an e-mail. A worker consumes only the queues `-Q`
names (the default queue without it): run one worker for "celery" and one for "webhooks"
(Procfile; scripts/run.sh starts both).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

DEFAULT_QUEUE = "celery"
WEBHOOK_QUEUE = "webhooks"

app = Celery("meterboard")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_routes = {"budgets.tasks.webhook_delivery_send": {"queue": WEBHOOK_QUEUE}}
app.autodiscover_tasks()

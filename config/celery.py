"""The Celery app: `celery -A config worker` and `celery -A config beat`.

The broker is Redis when REDIS_URL is set; otherwise kombu's filesystem transport under
var/celery/, so a real worker and beat run on a bare checkout with no Redis.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("meterboard")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

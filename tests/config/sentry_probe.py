"""Run by tests/config/test_sentry.py in a process of its own (sentry_sdk.init is for a whole process):
Django set up with SENTRY_DSN from the environment, then one request to a view that fails with an
API key's secret in its message and in the request's Authorization header."""

import os
import sys

import django
from django.test import Client

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings_test")
django.setup()

import sentry_sdk  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import path  # noqa: E402

import config.urls  # noqa: E402

secret = sys.argv[1]


def failing(request):
    raise RuntimeError(f"could not use key {secret}")


config.urls.urlpatterns.insert(0, path("sentry-probe", failing))
print("active", sentry_sdk.get_client().is_active(), settings.SENTRY_ENVIRONMENT, flush=True)
answer = Client(raise_request_exception=False, HTTP_HOST="127.0.0.1").get(
    "/sentry-probe", HTTP_AUTHORIZATION=f"Bearer {secret}", HTTP_X_PROBE=secret
)
print("status", answer.status_code, flush=True)
sentry_sdk.flush(timeout=10)

"""Billing fixtures: localstripe is the session-wide one of tests/conftest.py (`local_stripe`)."""

from __future__ import annotations

import pytest


@pytest.fixture
def celery_eager():
    """Run enqueued tasks in-process (Celery's own test mode), so a retry can be observed."""
    from config.celery import app

    before = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager = app.conf.task_eager_propagates = True
    yield app
    app.conf.task_always_eager, app.conf.task_eager_propagates = before

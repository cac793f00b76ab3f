"""Event stream fixtures: the budgets' local webhook receiver, real Celery workers and clean
counters (tests/budgets/conftest.py), reused as they are."""

from tests.budgets.conftest import _fresh_counters, allow_private, receiver, worker  # noqa: F401

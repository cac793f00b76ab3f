"""Billing fixtures: localstripe is the session-wide one of tests/conftest.py (`local_stripe`)."""

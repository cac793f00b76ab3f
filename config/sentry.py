"""Error reports to Sentry (issue 14, operations), only when SENTRY_DSN is set (config.settings calls
`sentry_init`; web and Celery processes both load the settings, so both report).

No personal data is sent (send_default_pii=False: no cookies, no user e-mail, no client address),
and every string of an event passes through the JSON logs' scrubber (core.logcontext.scrub) before it
leaves: an API key's secret, a Stripe key or a webhook signing secret is cut to what identifies it,
wherever it appears (a message, an exception's value, a local variable, a header).
"""

from __future__ import annotations

from typing import Any

from core.logcontext import scrub


def scrubbed(value: Any) -> Any:
    """`value` with every string in it, however deep, passed through core.logcontext.scrub."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrubbed(key): scrubbed(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(scrubbed(item) for item in value)
    return value


def before_send(event: dict, hint: dict) -> dict:
    return scrubbed(event)


def sentry_init(dsn: str, *, environment: str, release: str | None, traces_sample_rate: float) -> None:
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=dsn,
        integrations=[DjangoIntegration(), CeleryIntegration()],
        send_default_pii=False,
        environment=environment,
        release=release,
        traces_sample_rate=traces_sample_rate,
        before_send=before_send,
        before_send_transaction=before_send,
    )

"""The alert e-mail (text and HTML) and the one-line headline webhooks carry too."""

from __future__ import annotations

from django.core.mail import EmailMultiAlternatives, get_connection
from django.template.loader import render_to_string

from core.money import usd, usd_precise
from workspaces.contacts import dashboard_url

from .models import Alert

SEND_TIMEOUT = 30  # seconds, for the SMTP connection (Django's default is none: it could hang)


def _scope(alert: Alert) -> str:
    budget = alert.budget
    if budget is not None and budget.api_key_id:
        return f"API key “{budget.api_key.name}” ({budget.api_key.display_prefix}) in {alert.workspace.name}"
    return alert.workspace.name


def _anomaly_scope(anomaly) -> str:
    if anomaly.api_key_id:
        return f"API key “{anomaly.api_key.name}” ({anomaly.api_key.display_prefix}) in {anomaly.workspace.name}"
    return anomaly.workspace.name


def alert_headline(alert: Alert) -> str:
    month = f"{alert.period:%B %Y}"
    if alert.kind == Alert.Kind.ANOMALY:
        anomaly = alert.anomaly
        so_far = " so far" if anomaly.fraction < 1 else ""
        return (
            f"Unusual spend: {_anomaly_scope(anomaly)} spent {usd(anomaly.amount)} on {anomaly.day:%A %-d %B %Y}"
            f"{so_far}, against a usual {usd(anomaly.baseline)}"
        )
    if alert.kind == Alert.Kind.ACTUAL:
        return f"{_scope(alert)} has spent {alert.threshold}% of its {month} budget"
    if alert.kind == Alert.Kind.FORECAST:
        return f"{_scope(alert)} is forecast to spend {alert.threshold}% of its {month} budget"
    if alert.kind == Alert.Kind.FREE_ALLOWANCE:
        return f"{alert.workspace.name} has used up its free allowance for {month}"
    return f"Test alert for the {month} budget of {_scope(alert)}"


def alert_context(alert: Alert) -> dict:
    budget = alert.budget
    return {
        "alert": alert,
        "workspace": alert.workspace,
        "headline": alert_headline(alert),
        "is_free_allowance": alert.kind == Alert.Kind.FREE_ALLOWANCE,
        "is_test": alert.kind == Alert.Kind.TEST,
        "is_forecast": alert.kind == Alert.Kind.FORECAST,
        "is_anomaly": alert.kind == Alert.Kind.ANOMALY,
        "anomaly": alert.anomaly if alert.kind == Alert.Kind.ANOMALY else None,
        "spend": usd(alert.spend),
        "budget_amount": usd(alert.budget_amount),
        "forecast": usd(alert.forecast),
        "threshold_amount": usd(
            alert.budget_amount * alert.threshold / 100 if alert.budget_amount and alert.threshold else None
        ),
        "hard_limit": bool(budget and budget.hard_limit),
        "dashboard_url": dashboard_url(alert.workspace),
        **_anomaly_amounts(alert),
    }


def _anomaly_amounts(alert: Alert) -> dict:
    if alert.kind != Alert.Kind.ANOMALY:
        return {}
    return {"anomaly_baseline": usd(alert.anomaly.baseline), "anomaly_mad": usd_precise(alert.anomaly.mad)}


def alert_email_send(alert: Alert, address: str) -> None:
    """Send the alert to one address (one message per person: nobody sees the others' address).
    Raises what the mail backend raises."""
    context = alert_context(alert)
    subject = f"[Meterboard] {context['headline']}"
    text = render_to_string("budgets/emails/alert.txt", context)
    html = render_to_string("budgets/emails/alert.html", context)
    message = EmailMultiAlternatives(subject, text, to=[address])
    message.attach_alternative(html, "text/html")
    get_connection(timeout=SEND_TIMEOUT).send_messages([message])

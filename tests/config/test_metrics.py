"""Prometheus metrics at /metrics (issue 14, operations): real traffic (ingestion with every outcome,
allowance answers, a budget alert delivered by e-mail and to a local webhook, Stripe calls through
localstripe, a month-end close run as its Celery task, the event stream's events delivered to one
endpoint, retried and given up at another, and replayed through the API), then a scrape parsed with
prometheus_client's own parser, whose samples must have moved by what the traffic did. Who may
scrape (a token, or an address in the allow-list; never a session). The Grafana dashboard in docs/
names only metrics the scrape has, and has a panel for each."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client
from django.utils import timezone as dj_timezone
from prometheus_client.parser import text_string_to_metric_families

import notifications.delivery
from billing import cards, tasks
from billing.models import Statement
from budgets.models import AlertDelivery
from config.wsgi import Application
from core.periods import current_period, previous_month
from notifications.models import Event, EventDelivery

# The local webhook receiver, and the budgets' counters emptied before each test (autouse).
from tests.budgets.conftest import _fresh_counters, receiver  # noqa: F401
from tests.conftest import client_with, event, ingest, wsgi_call
from workspaces.models import Membership

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]
SERVED = Application()
DASHBOARD = ROOT / "docs" / "grafana-meterboard.json"


def scrape(handler=SERVED, **environ) -> str:
    status, text, _ = wsgi_call(handler, "GET", "/metrics", secret=None, **environ)
    assert status == 200, text
    return text


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


class Moves:
    """How far each sample moved between two scrapes (counters are per process and run-long)."""

    def __init__(self, before: dict, after: dict):
        self.before, self.after = before, after

    def __call__(self, name: str, **labels) -> float:
        key = (name, frozenset((k, str(v)) for k, v in labels.items()))
        assert key in self.after, f"{name}{labels} is not in the scrape"
        return self.after[key] - self.before.get(key, 0.0)

    def total(self, name: str, **labels) -> float:
        """The move of every sample of `name` whose labels include `labels`."""
        wanted = {(k, str(v)) for k, v in labels.items()}
        return sum(
            value - self.before.get(key, 0.0) for key, value in self.after.items() if key[0] == name and wanted <= key[1]
        )


@pytest.fixture
def celery_eager():
    """Enqueued tasks run in this process (Celery's test mode), so their metrics are this process's."""
    from config.celery import app

    before = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager = app.conf.task_eager_propagates = True
    yield app
    app.conf.task_always_eager, app.conf.task_eager_propagates = before


def post_events(secret: str, events: list[dict]) -> list[dict]:
    """Through the served application: the fast path's short middleware chain, as gunicorn calls it."""
    status, body, _ = wsgi_call(SERVED, "POST", "/api/v1/events", secret=secret, body={"events": events})
    assert status == 200, body
    return body["results"]


def allowance(secret: str) -> dict:
    status, body, _ = wsgi_call(SERVED, "GET", "/api/v1/allowance", secret=secret)
    assert status == 200, body
    return body


def waiting_in(app, queue: str) -> None:
    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge(queue)


def test_the_scrape_carries_every_metric_of_the_traffic(
    workspace, issued_key, local_stripe, receiver, celery_eager, settings  # noqa: F811
):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    before = samples(scrape())
    secret, api = issued_key.secret, client_with(issued_key.secret)
    now = dj_timezone.now().isoformat()

    # A hard limit of $5 with an alert at 100 %, by e-mail (the owner) and to a webhook.
    created = api.post(
        "/api/v1/budgets",
        {"amount": "5", "hard_limit": True, "thresholds": [100], "forecast_alerts": False,
         "webhooks": [{"url": receiver.url("/hook")}]},
        format="json",
    )  # fmt: skip
    assert created.status_code == 201, created.content
    assert allowance(secret)["allowed"] is True
    # Two endpoints of the workspace's event stream: one that answers 204, one that answers 500.
    endpoints = {}
    for path in ("/events", "/fail-events"):
        answer = api.post("/api/v1/webhook-endpoints", {"url": receiver.url(path)}, format="json")
        assert answer.status_code == 201, answer.content
        endpoints[path] = answer.json()["id"]

    # Ingestion: accepted, then duplicate, conflict and rejected (a known feature, and none).
    training = {"event_id": "t-1", "occurred_at": now, "feature": "training"}
    image = event(occurred_at=now)
    first = post_events(secret, [image, training])
    assert [r["status"] for r in first] == ["accepted", "accepted"]
    second = post_events(secret, [
        image,
        {**training, "quantity": 2},
        event(occurred_at=now, steps=-1),
        {"event_id": "x-1", "occurred_at": now, "feature": "teleport"},
        {"event_id": "x-2"},
    ])  # fmt: skip
    assert [r["status"] for r in second] == ["duplicate", "conflict", "rejected", "rejected", "rejected"]
    denied = allowance(secret)  # $5.004 spent of $5
    assert denied["allowed"] is False

    # The alert went out by e-mail and webhook (eager tasks: in this process).
    receiver.wait_for("/hook", 1)
    delivered = AlertDelivery.objects.filter(status=AlertDelivery.Status.DELIVERED)
    emailed = delivered.filter(channel=AlertDelivery.Channel.EMAIL).count()
    assert emailed >= 1 and len(mail.outbox) == emailed
    assert delivered.filter(channel=AlertDelivery.Channel.WEBHOOK).count() == 1

    # Stripe through localstripe: a card (one refused: no such payment method), then the month-end
    # close as beat runs it, which charges last month's statement.
    with pytest.raises(Exception, match="No such payment method"):
        cards.payment_method_set(workspace, "pm_doesnotexist")
    cards.payment_method_set(workspace, "pm_card_visa")
    period = previous_month(current_period(dj_timezone.now()))
    received = datetime(period.year, period.month, 28, tzinfo=timezone.utc) + timedelta(days=4)
    ingest(workspace, issued_key.api_key, [event(occurred_at=f"{period:%Y-%m}-10T12:00:00Z", quantity=400)],
           now=received.replace(day=1, hour=0, minute=30))  # fmt: skip
    result = tasks.period_close_and_charge_previous_month.apply().get()
    assert (result["finalized"], result["charges"]["paid"]) == (1, 1)

    # The event stream: the alert, the statement, its invoice and its payment were published and
    # delivered to /events (eager tasks); /fail-events failed its first event (to be retried) and
    # holds the others. A replay to /events (delivered, no latency: the event is not new), then the
    # failing head given up once its 24 hours are over (the next one then fails, to be retried).
    published = ["budget.threshold_crossed", "statement.finalized", "invoice.created", "payment.succeeded"]
    assert sorted(Event.objects.values_list("type", flat=True)) == sorted(published)
    assert len(receiver.on("/events")) == 4 and len(receiver.on("/fail-events")) == 1
    replayed = api.post(f"/api/v1/events/{Event.objects.first().pk}/replay", {"endpoint": endpoints["/events"]}, format="json")
    assert replayed.status_code == 202, replayed.content
    assert len(receiver.on("/events")) == 5
    head = EventDelivery.objects.get(endpoint_id=endpoints["/fail-events"], status="retrying")
    assert notifications.delivery.endpoint_deliver(head.endpoint_id, now=head.created_at + timedelta(hours=25)) == "failed"
    assert len(receiver.on("/fail-events")) == 3
    still_open = dict(Counter(EventDelivery.objects.exclude(status__in=["delivered", "failed"]).values_list("status", flat=True)))
    assert still_open == {"retrying": 1, "pending": 2}

    # Messages waiting in the webhooks queue (no worker reads it here).
    waiting_in(celery_eager, "webhooks")
    celery_eager.conf.task_always_eager = False
    for _ in range(2):
        celery_eager.send_task("budgets.tasks.webhook_delivery_send", args=[0], queue="webhooks")

    after = scrape()
    moved = Moves(before, samples(after))
    waiting_in(celery_eager, "webhooks")

    assert moved("meterboard_events_total", feature="generation", outcome="accepted") == 2  # the last month's too
    assert moved("meterboard_events_total", feature="training", outcome="accepted") == 1
    assert moved("meterboard_events_total", feature="generation", outcome="duplicate") == 1
    assert moved("meterboard_events_total", feature="training", outcome="conflict") == 1
    assert moved("meterboard_events_total", feature="generation", outcome="rejected") == 1
    assert moved("meterboard_events_total", feature="unknown", outcome="rejected") == 2
    assert moved("meterboard_ingest_request_duration_seconds_count") == 2  # two requests (ingest() is no request)
    assert moved("meterboard_ingest_request_duration_seconds_bucket", le="+Inf") == 2
    assert moved("meterboard_ingest_request_duration_seconds_sum") > 0

    assert moved("meterboard_allowance_answers_total", outcome="allowed", reason="within_budget") == 1
    assert moved("meterboard_allowance_answers_total", outcome="denied", reason="workspace_budget_reached") == 1

    assert moved("meterboard_alerts_sent_total", channel="email") == emailed
    assert moved("meterboard_alerts_sent_total", channel="webhook") == 1
    assert moved("meterboard_alert_delivery_attempts_total", channel="webhook", outcome="ok") == 1
    assert moved("meterboard_alert_delivery_attempts_total", channel="email", outcome="ok") == emailed

    intents = local_stripe.get("/v1/payment_intents").json()["data"]
    assert len(intents) == 1
    assert moved("meterboard_stripe_calls_total", operation="payment_intents.create", outcome="ok") == 1
    assert moved.total("meterboard_stripe_calls_total", outcome="client_error") == 1  # the unknown card
    assert moved.total("meterboard_stripe_calls_total") >= 4  # customer, cards, the charge

    assert moved("meterboard_close_duration_seconds_count", outcome="succeeded") == 1
    assert moved("meterboard_close_duration_seconds_sum", outcome="succeeded") > 0
    statements = Statement.objects.filter(period=period).count()
    now_samples = samples(after)
    assert now_samples[("meterboard_close_workspaces_done", frozenset())] == statements == 1
    assert now_samples[("meterboard_close_workspaces_total", frozenset())] == statements

    task = "billing.tasks.period_close_and_charge_previous_month"
    assert moved("meterboard_celery_tasks_total", task=task, outcome="success") == 1
    assert moved.total("meterboard_celery_tasks_total", task="budgets.tasks.workspace_evaluate", outcome="success") >= 1
    assert now_samples[("meterboard_celery_queue_length", frozenset({("queue", "webhooks")}))] == 2

    for event_type in published:
        assert moved("meterboard_stream_events_published_total", type=event_type) == 1
    assert moved("meterboard_stream_delivery_attempts_total", outcome="delivered") == 5  # the replay too
    assert moved("meterboard_stream_delivery_attempts_total", outcome="will_retry") == 2
    assert moved("meterboard_stream_delivery_attempts_total", outcome="gave_up") == 1
    assert moved("meterboard_stream_delivery_latency_seconds_count") == 4  # not the replay
    assert moved("meterboard_stream_delivery_latency_seconds_bucket", le="+Inf") == 4
    assert 0 < moved("meterboard_stream_delivery_latency_seconds_sum") < 4 * 60
    pending = {status: now_samples[("meterboard_stream_deliveries_pending", frozenset({("status", status)}))]
               for status in ("pending", "retrying")}  # fmt: skip
    assert pending == {"pending": 2, "retrying": 1}
    assert ("meterboard_celery_queue_length", frozenset({("queue", "celery")})) in now_samples


# --- Who may scrape ---------------------------------------------------------------------------------


def test_from_an_address_outside_the_allow_list_without_a_token_is_refused_403(settings):
    status, body, _ = wsgi_call(SERVED, "GET", "/metrics", secret=None, REMOTE_ADDR="203.0.113.9")
    assert status == 403
    assert body["detail"] == (
        "/metrics is not open to 203.0.113.9: scrape from an address in METRICS_ALLOWED_IPS, or set "
        "METRICS_TOKEN and send it as a Bearer token."
    )
    assert "meterboard_events" not in json.dumps(body)
    # This machine (the default allow-list: 127.0.0.1 and ::1) may.
    assert "meterboard_events_total" in scrape() or "# TYPE meterboard_events_total counter" in scrape()
    assert wsgi_call(SERVED, "GET", "/metrics", secret=None, REMOTE_ADDR="::1")[0] == 200


def test_the_token_opens_it_from_anywhere_and_a_wrong_one_is_401(settings):
    settings.METRICS_TOKEN = "scrape-me-0123456789abcdef"
    status, text, _ = wsgi_call(SERVED, "GET", "/metrics", secret="scrape-me-0123456789abcdef", REMOTE_ADDR="203.0.113.9")
    assert status == 200 and "# TYPE meterboard_events_total counter" in text
    status, body, headers = wsgi_call(SERVED, "GET", "/metrics", secret="guess", REMOTE_ADDR="127.0.0.1")
    assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert body["detail"] == "This token does not open /metrics: send Authorization: Bearer <METRICS_TOKEN>."
    status, body, _ = wsgi_call(SERVED, "GET", "/metrics", secret=None, REMOTE_ADDR="203.0.113.9")
    assert status == 403 and "send Authorization: Bearer <METRICS_TOKEN>" in body["detail"]


def test_the_allow_list_takes_networks_and_an_empty_one_lets_only_the_token_in(settings):
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8", "2001:db8::/32"]
    assert wsgi_call(SERVED, "GET", "/metrics", secret=None, REMOTE_ADDR="10.20.30.40")[0] == 200
    assert wsgi_call(SERVED, "GET", "/metrics", secret=None, REMOTE_ADDR="2001:db8::7")[0] == 200
    assert wsgi_call(SERVED, "GET", "/metrics", secret=None, REMOTE_ADDR="127.0.0.1")[0] == 403
    settings.METRICS_ALLOWED_IPS = []
    settings.METRICS_TOKEN = "only-the-token-0123456789"
    assert wsgi_call(SERVED, "GET", "/metrics", secret=None, REMOTE_ADDR="127.0.0.1")[0] == 403
    assert wsgi_call(SERVED, "GET", "/metrics", secret="only-the-token-0123456789", REMOTE_ADDR="127.0.0.1")[0] == 200


def test_behind_a_proxy_the_forwarded_address_is_the_one_checked(settings):
    settings.BEHIND_PROXY = True
    forwarded = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}
    assert wsgi_call(SERVED, "GET", "/metrics", secret=None, **forwarded)[0] == 403


def test_a_signed_in_staff_member_is_no_scraper_on_either_chain(workspace):
    staff = get_user_model().objects.create(username="ops@meterboard.test", email="ops@meterboard.test", is_staff=True)
    Membership.objects.create(workspace=workspace, user=staff, role=Membership.Role.OWNER)
    browser = Client(REMOTE_ADDR="203.0.113.9", HTTP_HOST="127.0.0.1")
    browser.force_login(staff)
    answer = browser.get("/metrics")  # the full middleware chain, with the session
    assert answer.status_code == 403 and "METRICS_ALLOWED_IPS" in answer.json()["detail"]
    cookie = f"sessionid={browser.cookies['sessionid'].value}"
    assert wsgi_call(SERVED, "GET", "/metrics", secret=None, REMOTE_ADDR="203.0.113.9", HTTP_COOKIE=cookie)[0] == 403


# --- The Grafana dashboard ----------------------------------------------------------------------------


_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"), "gauge": ("",)}


def scraped_names() -> tuple[set[str], dict[str, str]]:
    """Every series name the scrape can carry (from its families and types, whether or not a
    labelled one has samples yet), and each family's name by series name."""
    names, family_of = set(), {}
    for family in text_string_to_metric_families(scrape()):
        # (a counter's or histogram's `_created` lines parse as gauges of their own: they are not families)
        if family.name.startswith("meterboard_") and not family.name.endswith("_created"):
            for suffix in _SUFFIXES[family.type]:
                names.add(family.name + suffix)
                family_of[family.name + suffix] = family.name
    return names, family_of


def dashboard_expressions() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]


def test_the_grafana_dashboard_names_only_scraped_metrics_and_shows_every_family():
    board = json.loads(DASHBOARD.read_text())
    assert [item["name"] for item in board["__inputs"]] == ["DS_PROMETHEUS"]
    assert all(panel["datasource"]["uid"] == "${DS_PROMETHEUS}" for panel in board["panels"] if panel["type"] != "row")
    names, family_of = scraped_names()
    used = defaultdict(list)
    for expression in dashboard_expressions():
        for name in re.findall(r"\bmeterboard_[a-z_]+", expression):
            assert name in names, f"the dashboard's {expression!r} names {name}, which /metrics does not carry"
            used[family_of[name]].append(expression)
    assert set(used) == set(family_of.values()), f"no panel for {set(family_of.values()) - set(used)}"

"""Prometheus metrics (issue 14, operations): every metric Meterboard exports, in one place, and the
small functions the apps record them with. `/metrics` serves them (config.metrics).

Counters and histograms use prometheus_client. Web and Celery processes are many, so with
PROMETHEUS_MULTIPROC_DIR set (read by prometheus_client when it is first imported: it must be in
the environment before the process starts) each process writes its values to files in that
folder and a scrape adds them up; without it, each process keeps its own values in memory (tests,
`runserver`). The README ("Metrics") lists each metric and what it means.

Label values are always from a short, fixed list (a feature name or "unknown", a task name, a
Stripe operation), never from what a caller sends, so that no client can grow the number of series.
"""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "meterboard_events",
    "Usage events by feature and outcome: accepted, duplicate, conflict or rejected (feature 'unknown' "
    "when a rejected event names none of the known features).",
    ["feature", "outcome"],
)
INGEST_SECONDS = Histogram(
    "meterboard_ingest_request_duration_seconds",
    "Time to answer POST /api/v1/events, from the URL's view to its answer (authentication, parsing, storing).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
ALLOWANCE_ANSWERS = Counter(
    "meterboard_allowance_answers",
    "GET /api/v1/allowance answers: outcome allowed/denied, and the reason (no_hard_limit, within_budget, "
    "workspace_budget_reached, api_key_budget_reached).",
    ["outcome", "reason"],
)
ALERTS_SENT = Counter(
    "meterboard_alerts_sent", "Alert deliveries that reached their recipient, by channel (email, webhook).", ["channel"]
)
ALERT_DELIVERY_ATTEMPTS = Counter(
    "meterboard_alert_delivery_attempts",
    "Attempts at delivering an alert, by channel and outcome (ok, http_error, timeout, refused, error, ...).",
    ["channel", "outcome"],
)
ALERT_DELIVERIES_FAILED = Counter(
    "meterboard_alert_deliveries_failed",
    "Alert deliveries given up (their 24-hour retry window ended) or cancelled, by channel.",
    ["channel"],
)
STRIPE_CALLS = Counter(
    "meterboard_stripe_calls",
    "HTTP requests to Stripe by operation (e.g. payment_intents.create) and outcome: ok, client_error (4xx, "
    "a declined card included), server_error (5xx), unreachable (no answer: connection or timeout).",
    ["operation", "outcome"],
)
CLOSE_SECONDS = Histogram(
    "meterboard_close_duration_seconds",
    "Duration of a month-end close and charge (billing.month_end), by outcome (succeeded, failed).",
    ["outcome"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
)
# The last close's progress, whichever process runs it: the most recent value written wins.
CLOSE_WORKSPACES_DONE = Gauge(
    "meterboard_close_workspaces_done",
    "Workspace-months the running (or last) close has finished.",
    multiprocess_mode="mostrecent",
)
CLOSE_WORKSPACES_TOTAL = Gauge(
    "meterboard_close_workspaces_total",
    "Workspace-months the running (or last) close has to finish.",
    multiprocess_mode="mostrecent",
)
CELERY_TASKS = Counter(
    "meterboard_celery_tasks", "Celery task runs by task name and outcome (success, failure, retry).", ["task", "outcome"]
)
# meterboard_celery_queue_length{queue} is read from the broker at each scrape (config.metrics).

# The workspace event stream (notifications). Not meterboard_events_*: those are usage events.
STREAM_EVENTS_PUBLISHED = Counter(
    "meterboard_stream_events_published",
    "Events of the workspace event stream recorded, by type, counted when their transaction commits "
    "(a key published before is not counted again).",
    ["type"],
)
STREAM_DELIVERY_ATTEMPTS = Counter(
    "meterboard_stream_delivery_attempts",
    "Attempts at delivering an event to a workspace endpoint, by outcome: delivered, will_retry (failed, "
    "retried later), gave_up (failed with its 24-hour window over, or its last attempt never reported back).",
    ["outcome"],
)
STREAM_DELIVERY_LATENCY = Histogram(
    "meterboard_stream_delivery_latency_seconds",
    "From an event's created to its delivery to an endpoint, retries included (replays not counted).",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
)
# meterboard_stream_deliveries_pending{status} is read from the database at each scrape (config.metrics).

UNKNOWN_FEATURE = "unknown"


def events_count(tally: Tally) -> None:
    """Add one ingestion batch's outcomes: `tally` counts (feature, outcome) pairs, so a batch of
    1,000 events costs one increment per pair, not one per event."""
    for (feature, outcome), count in tally.items():
        EVENTS.labels(feature, outcome).inc(count)


def close_progress(done: int, total: int) -> None:
    CLOSE_WORKSPACES_DONE.set(done)
    CLOSE_WORKSPACES_TOTAL.set(total)


def stream_events_count(types: Tally) -> None:
    """Add one publication's events: `types` counts them by type (one increment per type)."""
    for event_type, count in types.items():
        STREAM_EVENTS_PUBLISHED.labels(event_type).inc(count)

"""GET /metrics, for Prometheus (issue 14, operations): the metrics of core.metrics, Celery's task
outcomes, the length of each Celery queue read from the broker at scrape time, and the event
stream's deliveries not yet settled, read from the database at scrape time.

Who may scrape: a request with `Authorization: Bearer <METRICS_TOKEN>` (when that is set), or one
from an address in METRICS_ALLOWED_IPS (CIDRs; by default this machine only). Anything else gets
a 401 (a wrong token) or a 403 (no token, from elsewhere) saying what to do. No session is read:
config.wsgi sends /metrics through the short middleware chain, like the health checks.

With PROMETHEUS_MULTIPROC_DIR set, a scrape adds up the values every process of this machine wrote
there (gunicorn's workers, Celery's pool processes); see core.metrics.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path

from celery.signals import task_failure, task_retry, task_success, worker_process_shutdown
from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from core.metrics import CELERY_TASKS

QUEUES = ("celery", "webhooks")  # config.celery's DEFAULT_QUEUE and WEBHOOK_QUEUE


def multiprocess_dir() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


# --- Who may scrape -------------------------------------------------------------------------------


def _allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(cidr, strict=False) for cidr in settings.METRICS_ALLOWED_IPS]


def _client_address(request) -> str:
    """REMOTE_ADDR, or the last hop of X-Forwarded-For behind a proxy (as the throttles see it)."""
    if settings.BEHIND_PROXY:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return forwarded.split(",")[-1].strip()
    return request.META.get("REMOTE_ADDR", "")


def _refusal(request) -> HttpResponse | None:
    """None when the request may scrape; else the answer that says why not."""
    keyword, _, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    token = settings.METRICS_TOKEN
    if keyword.lower() == "bearer" and given.strip():
        if token and hmac.compare_digest(given.strip().encode(), token.encode()):
            return None
        answer = JsonResponse(
            {"detail": "This token does not open /metrics: send Authorization: Bearer <METRICS_TOKEN>."
             if token else "/metrics takes no token here (METRICS_TOKEN is not set); scrape from an address "
             "in METRICS_ALLOWED_IPS."}, status=401,
        )  # fmt: skip
        answer["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return answer
    address = _client_address(request)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        ip = None
    if ip is not None and any(ip in network for network in _allowed_networks()):
        return None
    how = "send Authorization: Bearer <METRICS_TOKEN>" if token else "set METRICS_TOKEN and send it as a Bearer token"
    return JsonResponse(
        {"detail": f"/metrics is not open to {address or 'this client'}: scrape from an address in "
         f"METRICS_ALLOWED_IPS, or {how}."}, status=403,
    )  # fmt: skip


# --- What a scrape reads --------------------------------------------------------------------------


class ReadAtScrape:
    """A gauge read from its source at each scrape: `read()` answers {label value: figure}. A source
    that does not answer (a broker, a database) leaves the family empty; the scrape goes on."""

    def __init__(self, name: str, documentation: str, label: str, read):
        self.name, self.documentation, self.label, self.read = name, documentation, label, read

    def collect(self):
        family = GaugeMetricFamily(self.name, self.documentation, labels=[self.label])
        try:
            figures = self.read()
        except Exception:  # noqa: BLE001 (see the docstring)
            figures = {}
        for value, figure in figures.items():
            family.add_metric([value], figure)
        yield family


def _deliveries_pending() -> dict[str, int]:
    # Imported here: config.celery imports this module while the settings load, before models can be.
    from notifications.selectors import deliveries_pending_count

    return deliveries_pending_count()


# meterboard_celery_queue_length{queue}: messages waiting in each queue. On Redis, the queue's lists
# (LLEN, each priority's too); on the filesystem broker, its message files. Tasks a worker holds
# (started, or waiting for a countdown) are not waiting.
QUEUE_LENGTHS = ReadAtScrape(
    "meterboard_celery_queue_length", "Celery messages waiting in each queue (read from the broker).",
    "queue", lambda: _queue_lengths(),
)  # fmt: skip
# meterboard_stream_deliveries_pending{status}: event deliveries not yet settled, one grouped COUNT.
DELIVERIES_PENDING = ReadAtScrape(
    "meterboard_stream_deliveries_pending",
    "Event stream deliveries to workspace endpoints not yet settled, by status: pending (not yet "
    "attempted, or queued behind a failing one) and retrying (read from the database).",
    "status", _deliveries_pending,
)  # fmt: skip


def _queue_lengths() -> dict[str, int]:
    if settings.CELERY_BROKER_URL.startswith("filesystem:"):
        folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
        names = [path.name for path in folder.iterdir()]
        return {queue: sum(name.endswith(f".{queue}.msg") for name in names) for queue in QUEUES}
    client = _redis()
    with client.pipeline() as pipe:
        for queue in QUEUES:
            for key in _priority_keys(queue):
                pipe.llen(key)
        sizes = iter(pipe.execute())
    return {queue: sum(next(sizes) for _ in _priority_keys(queue)) for queue in QUEUES}


def _priority_keys(queue: str) -> list[str]:
    """kombu's Redis lists for one queue: the queue itself, and one per priority step above 0."""
    return [queue] + [f"{queue}\x06\x16{step}" for step in (3, 6, 9)]


_redis_clients: dict[str, object] = {}


def _redis():
    import redis

    url = settings.CELERY_BROKER_URL
    if url not in _redis_clients:
        _redis_clients[url] = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    return _redis_clients[url]


def registry() -> CollectorRegistry:
    """What a scrape exposes: this process's metrics, or every process's from PROMETHEUS_MULTIPROC_DIR."""
    if multiprocess_dir():
        scraped = CollectorRegistry()
        multiprocess.MultiProcessCollector(scraped)
    else:
        scraped = CollectorRegistry()
        scraped.register(_ThisProcess())
    scraped.register(QUEUE_LENGTHS)
    scraped.register(DELIVERIES_PENDING)
    return scraped


class _ThisProcess:
    """The default registry's metrics (core.metrics, and the process's own), without registering
    the queue collector in it for good."""

    def collect(self):
        yield from REGISTRY.collect()


@require_GET
def metrics_view(request):
    refused = _refusal(request)
    if refused is not None:
        return refused
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)


# --- Celery: task outcomes, and pool processes that end ----------------------------------------------


def _task_name(sender) -> str:
    return getattr(sender, "name", None) or str(sender)


@task_success.connect(dispatch_uid="config.metrics.task_success")
def _task_succeeded(sender=None, **kwargs):
    CELERY_TASKS.labels(_task_name(sender), "success").inc()


@task_failure.connect(dispatch_uid="config.metrics.task_failure")
def _task_failed(sender=None, **kwargs):
    CELERY_TASKS.labels(_task_name(sender), "failure").inc()


@task_retry.connect(dispatch_uid="config.metrics.task_retry")
def _task_retried(sender=None, **kwargs):
    CELERY_TASKS.labels(_task_name(sender), "retry").inc()


@worker_process_shutdown.connect(dispatch_uid="config.metrics.process_shutdown")
def _pool_process_ended(pid=None, **kwargs):
    """A Celery pool process that ends: its live gauges leave the scrape (its counters stay)."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid or os.getpid())

"""Health endpoints for load balancers and orchestrators (issue 13).

- `GET /healthz`: the process answers (no database, no Redis): 200 `{"status": "ok"}`. Liveness:
  restart the process when it stops answering.
- `GET /readyz`: the process can serve: the database answers and has every migration of this
  code applied, Redis answers (when `REDIS_URL` is set), and the Celery broker accepts a
  connection. 200 `{"status": "ready", "checks": {...}}`, or 503 `{"status": "not ready",
  "checks": {...}}` naming what failed; each check gives up after `READY_TIMEOUT_SECONDS` (2).
  Readiness: send no traffic to a node that is not ready (e.g. during a deploy whose migrations
  have not run yet, or cut off from Redis).

Neither needs authentication nor says anything secret (no URL, host or password: a check's
failure is its exception's class and first line, with credentials never part of either).
Both take the short middleware chain of machine calls (config.wsgi).
"""

from __future__ import annotations

import time

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

READY_TIMEOUT_SECONDS = 2.0
MIGRATIONS_CHECKED_FOR = 60.0  # seconds a "no migration pending" answer is reused by a process

_migrations_ok_at: float | None = None


def migrations_check_forget() -> None:
    global _migrations_ok_at
    _migrations_ok_at = None


def _failure(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _database() -> str:
    connection = connections[DEFAULT_DB_ALIAS]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL statement_timeout = %s", [int(READY_TIMEOUT_SECONDS * 1000)])
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _migrations() -> str:
    global _migrations_ok_at
    if _migrations_ok_at is not None and time.monotonic() - _migrations_ok_at < MIGRATIONS_CHECKED_FOR:
        return "ok"
    from django.db.migrations.executor import MigrationExecutor

    connection = connections[DEFAULT_DB_ALIAS]
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        names = ", ".join(f"{migration.app_label}.{migration.name}" for migration, _ in plan[:5])
        more = f" and {len(plan) - 5} more" if len(plan) > 5 else ""
        raise RuntimeError(f"{len(plan)} pending: {names}{more}; run `manage.py migrate`")
    _migrations_ok_at = time.monotonic()
    return "ok"


def _redis() -> str:
    if not settings.REDIS_URL:
        return "not configured (the embedded default: local cache)"
    import redis

    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=READY_TIMEOUT_SECONDS, socket_connect_timeout=READY_TIMEOUT_SECONDS
    )
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def _broker() -> str:
    from config.celery import app

    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, timeout=READY_TIMEOUT_SECONDS)
    return "ok"


CHECKS = {"database": _database, "migrations": _migrations, "redis": _redis, "broker": _broker}


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    results: dict[str, str] = {}
    ready = True
    for name, check in CHECKS.items():
        if name == "migrations" and results.get("database") != "ok":
            results[name] = "not checked (no database)"
            ready = False
            continue
        try:
            results[name] = check()
        except Exception as exc:  # noqa: BLE001 (any failure means not ready; it is reported)
            results[name] = "failed: " + _failure(exc)
            ready = False
    response = JsonResponse({"status": "ready" if ready else "not ready", "checks": results}, status=200 if ready else 503)
    response["Cache-Control"] = "no-store"
    return response

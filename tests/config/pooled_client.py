"""Run by tests/config/test_pgbouncer.py in a process of its own, whose DATABASE_URL points at
PgBouncer (transaction pooling): what the web processes do, from several threads at once, so that
consecutive transactions land on different server connections. Prints its findings as JSON."""

from __future__ import annotations

import json
import os
import sys
import threading
import uuid

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings_test")
sys.path.insert(0, os.getcwd())

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connections  # noqa: E402

from config.wsgi import application  # noqa: E402
from tests.conftest import event, wsgi_call  # noqa: E402
from usage.models import UsageEvent  # noqa: E402
from workspaces.services import api_key_create, workspace_create  # noqa: E402

THREADS, SINGLES = 4, 25


def main() -> None:
    workspace = workspace_create(slug=f"pooled-{uuid.uuid4().hex[:8]}", owner_email="pooled@test.example")
    secret = api_key_create(workspace=workspace, name="pooled").secret
    statuses: list[int] = []
    errors: list[str] = []

    def sender(number: int) -> None:
        try:
            for n in range(SINGLES):
                status, body, _ = wsgi_call(application, "POST", "/api/v1/events", secret=secret,
                                            body=event(event_id=f"t{number}-{n}"))  # fmt: skip
                statuses.append(status)
                if status != 200:
                    errors.append(str(body)[:200])
        except Exception as exc:  # noqa: BLE001 (reported)
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
        finally:
            connections.close_all()

    threads = [threading.Thread(target=sender, args=(number,)) for number in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    batch = [event(event_id=f"batch-{n}") for n in range(200)]
    _, first, _ = wsgi_call(application, "POST", "/api/v1/events", secret=secret, body={"events": batch})
    _, again, _ = wsgi_call(application, "POST", "/api/v1/events", secret=secret, body={"events": batch})
    result = {
        "prepared": settings.DATABASE_PREPARED_STATEMENTS,
        "server_side_cursors_off": settings.DATABASES["default"].get("DISABLE_SERVER_SIDE_CURSORS", False),
        "singles": statuses.count(200),
        "errors": errors[:5],
        "batch_accepted": first["accepted"],
        "batch_repeated": again["duplicates"],
        "readyz": wsgi_call(application, "GET", "/readyz", secret=None)[0],
        "allowance": wsgi_call(application, "GET", "/api/v1/allowance", secret=secret)[0],
        "usage_api": wsgi_call(application, "GET", "/api/v1/usage", secret=secret)[0],
        "stored": UsageEvent.objects.filter(workspace=workspace).count(),
        "iterated": sum(1 for _ in UsageEvent.objects.filter(workspace=workspace).iterator(chunk_size=50)),
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()

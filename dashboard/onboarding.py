"""The "Get started" checklist's first request, ready to copy: as curl, with the Python client
(clients/python) and as plain HTTP. With the secret of a key created a moment ago filled in, else a
placeholder (a secret is only ever shown in the response that created it)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from django.conf import settings

from workspaces.services import IssuedKey

PLACEHOLDER = "YOUR_API_KEY"
# A small, valid generation event (sd15, 30 steps, 512², $0.004 at list price).
EXAMPLE_EVENT = {"feature": "generation", "model": "sd15", "steps": 30, "width": 512, "height": 512}


@dataclass(frozen=True)
class FirstRequest:
    key_filled_in: bool
    curl: str
    python: str
    http: str


def first_request(issued: IssuedKey | None, *, now: datetime) -> FirstRequest:
    secret = issued.secret if issued is not None else PLACEHOLDER
    base = settings.SITE_URL.rstrip("/")
    url = f"{base}/api/v1/events"
    # curl stamps the event when it runs (the API wants occurred_at); the HTTP text shows an instant.
    curl_event = (
        '{"event_id": "first-curl-\'"$(date +%s)"\'", "occurred_at": "\'"$(date -u +%Y-%m-%dT%H:%M:%SZ)"\'", '
        + (json.dumps(EXAMPLE_EVENT)[1:])
    )
    curl = (
        f"curl -sS -X POST {url} \\\n"
        f'  -H "Authorization: Bearer {secret}" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        f"  -d '{{\"events\": [{curl_event}]}}'"
    )
    python = (
        "# pip install ./clients/python\n"
        "from meterboard import Generation, Meterboard\n\n"
        f'with Meterboard(api_key="{secret}", base_url="{base}") as mb:\n'
        '    mb.track(Generation(model="sd15", steps=30, width=512, height=512))\n'
    )
    stamp = now.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = json.dumps(
        {
            "events": [
                {"event_id": f"first-http-{int(now.timestamp())}", "occurred_at": stamp, **EXAMPLE_EVENT}
            ]
        }
    )
    http = (
        "POST /api/v1/events HTTP/1.1\n"
        f"Host: {urlsplit(base).netloc}\n"
        f"Authorization: Bearer {secret}\n"
        "Content-Type: application/json\n\n"
        f"{body}\n"
    )
    return FirstRequest(key_filled_in=issued is not None, curl=curl, python=python, http=http)

"""The framework's ceiling for ingestion: a bare Django JSON view, served by the same gunicorn
settings as the app (`gunicorn bench.bare:application`), with no middleware, no database, no
authentication: it reads the JSON body and answers a small JSON object. Single-event ingestion is
judged by its share of this view's rate, measured in the same run (bench/ingest.py), so that a
slower or busier machine cannot hide a regression or fake a gain."""

from __future__ import annotations

import json

from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-bare-view-not-secret-" + "x" * 40,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        USE_TZ=True,
    )

from django.core.wsgi import get_wsgi_application  # noqa: E402  (after settings)
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402

PATH = "/bare/events"


@csrf_exempt
def events(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        return JsonResponse({"detail": "POST an event."}, status=401)  # what the readiness check gets
    event = json.loads(request.body)
    return JsonResponse({"accepted": 1, "results": [{"index": 0, "event_id": event.get("event_id"), "status": "accepted"}]})


urlpatterns = [path(PATH.lstrip("/"), events)]
application = get_wsgi_application()

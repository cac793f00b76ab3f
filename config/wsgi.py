"""The WSGI application (gunicorn config.wsgi:application).

Machine calls to the two hot endpoints, `POST /api/v1/events` and `GET /api/v1/allowance` with an
`Authorization: Bearer` key, go through a handler with only the middleware such a call can use:
security headers (SecurityMiddleware, the Content-Security-Policy, X-Frame-Options), and the Host
check and Content-Length that CommonMiddleware would do. Sessions, CSRF, messages, the signed-in person,
static files and CommonMiddleware's slash redirect (an extra URL resolution per request) mean
nothing to a call that authenticates with a key, and cost it 12 % of its instructions (issue 12).
Both views authenticate only with keys: a Bearer header is answered by the key or with a 401,
never by a session. The health endpoints (config.health) and /metrics (config.metrics) take it too. Everything else, the same
paths without a Bearer header included, takes the full chain (settings.MIDDLEWARE).
"""

import os

from django.core.handlers.wsgi import WSGIHandler
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

MACHINE_PATHS = frozenset({"/api/v1/events", "/api/v1/allowance"})
# config.health and config.metrics: no session (the metrics take their own token or address).
HEALTH_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
MACHINE_MIDDLEWARE = (
    "core.logcontext.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "config.security.ContentSecurityPolicyMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.security.MachineCallMiddleware",
)


class MachineCallHandler(WSGIHandler):
    """A WSGIHandler whose chain is MACHINE_MIDDLEWARE, in settings.MIDDLEWARE's order."""

    def load_middleware(self, is_async=False):
        from django.conf import settings

        full = settings.MIDDLEWARE
        wanted = [name for name in full if name in MACHINE_MIDDLEWARE]
        wanted += [name for name in MACHINE_MIDDLEWARE if name not in full]
        settings.MIDDLEWARE = wanted  # read by BaseHandler.load_middleware, once, at start-up
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = full


def is_machine_call(environ) -> bool:
    path = environ.get("PATH_INFO")
    if path in HEALTH_PATHS:
        return True
    return path in MACHINE_PATHS and environ.get("HTTP_AUTHORIZATION", "")[:7].lower() == "bearer "


class Application:
    def __init__(self):
        self.full = get_wsgi_application()  # sets Django up
        self.machine = MachineCallHandler()

    def __call__(self, environ, start_response):
        handler = self.machine if is_machine_call(environ) else self.full
        return handler(environ, start_response)


application = Application()

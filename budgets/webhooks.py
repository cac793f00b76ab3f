"""Moved to core.webhooks (shared with the event stream's endpoints, notifications/); this name
stays for the budgets code and tests that import it."""

from core.webhooks import *  # noqa: F403
from core.webhooks import socket  # noqa: F401  (tests patch socket.getaddrinfo through this name)

"""Throttles: the API per key and per client address, sign-in with lockout and backoff, password
reset mails. Counters live in Django's cache (Redis in production, shared by every web process;
the local-memory cache in the embedded default, per process).

Each limit is a setting read from the environment (README, "Security"):
- API calls per key (`API_RATE_PER_KEY`, default 60000/min: well above the ingestion targets)
  and per client address when unauthenticated (`API_RATE_ANONYMOUS`, 120/min); failed API-key
  authentications per client address (`API_AUTH_FAILURES_PER_ADDRESS`, 30/min), so keys cannot be
  guessed at speed. Over a limit: 429 with `Retry-After`. Calls per key are counted a few at a
  time by each process (`Reservations`): exactly up to 2,000 a window, within 0.1 % per process
  above.
- Sign-in: after `LOGIN_FAILURES_PER_ACCOUNT` (5) wrong passwords for an account, or
  `LOGIN_FAILURES_PER_ADDRESS` (20) from one client address, within 15 minutes, that account or
  address is locked for `LOGIN_LOCKOUT_SECONDS` (60), doubling with each lockout in a day up to
  an hour. A locked attempt is refused before any password is hashed (429, with the wait).
- Password reset: `PASSWORD_RESETS_PER_ADDRESS` mails an hour to one e-mail address (3; more are
  silently not sent, so the form reveals nothing) and `PASSWORD_RESETS_PER_CLIENT` forms an hour
  from one client address (20; more get a 429).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time

from django.conf import settings
from django.core.cache import cache, caches
from rest_framework import exceptions
from rest_framework.throttling import BaseThrottle

UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600, "d": 86400,
         "day": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """'600/min' → (600, 60)."""
    count, _, unit = rate.partition("/")
    return int(count), UNITS[unit.strip().lower()]


def client_address(request) -> str:
    """The client's address: REMOTE_ADDR, or the last hop of X-Forwarded-For when BEHIND_PROXY
    says a proxy in front sets it (otherwise the header is the client's to forge)."""
    if getattr(settings, "BEHIND_PROXY", False):
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-1][:64]
    return request.META.get("REMOTE_ADDR", "")[:64]


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def window_hit(scope: str, ident: str, limit: int, period: int, *, cost: int = 1) -> float | None:
    """Count a hit in the current fixed window. Returns None when within `limit`, else the
    seconds until the window ends. One round trip on Redis (a script: INCRBY, EXPIRE when new)."""
    now = time.time()
    window = int(now // period)
    key = f"thr:{scope}:{_digest(ident)}:{window}"
    count = _incr(key, cost, period + 1)
    if count <= limit:
        return None
    return max(period - (now % period), 0.001)


class Reservations:
    """Calls per key, counted in Redis a few at a time (issue 12: the count was a tenth of a
    single-event request's instructions).

    A process that takes a call of a key reserves tokens of the key's current window in Redis with
    one INCRBY and spends them on its next calls of that key in the same window, without Redis.
    It reserves 1 at first and doubles each time it runs out within the window, up to
    `limit // 1000` (at most 64): a limit under 2,000 a window is counted call by call, exactly;
    a larger one may refuse a call while up to `reserve - 1` tokens sit unused in each busy
    process (at most 0.1 % of the limit per process, 60 of 60,000 a minute), and never lets more
    calls through than the limit. Tokens left at the window's end are dropped."""

    MAX_RESERVE = 64

    def __init__(self):
        self._lock = threading.Lock()
        self._held: dict[str, list[int]] = {}  # Redis key → [tokens left, next reservation size]

    def clear(self) -> None:
        with self._lock:
            self._held.clear()

    def hit(self, scope: str, ident: str, limit: int, period: int) -> float | None:
        """As window_hit."""
        now = time.time()
        window = int(now // period)
        key = f"thr:{scope}:{_digest(ident)}:{window}"
        largest = max(1, min(self.MAX_RESERVE, limit // 1000))
        with self._lock:
            held = self._held.get(key)
            if held is not None and held[0] > 0:
                held[0] -= 1
                return None
            size = min(held[1], largest) if held is not None else 1
        count = _incr(key, size, period + 1)
        granted = size - max(0, count - limit)  # of the tokens just counted, those within the limit
        with self._lock:
            if key not in self._held and len(self._held) >= 10_000:
                self._held = {k: v for k, v in self._held.items() if k.endswith(f":{window}")}
            self._held[key] = [max(granted - 1, 0), min(size * 2, largest)]
        if granted > 0:
            return None
        return max(period - (now % period), 0.001)


reservations = Reservations()


# INCRBY, and EXPIRE when the key is new: one round trip, no pipeline object (building one costs
# redis-py more than the call itself on this hot path).
_INCR = """
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
if count == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return count
"""
_script = None  # the registered script (its SHA); each call passes the client to run it on


def _incr(key: str, amount: int, ttl: int) -> int:
    global _script
    client = _redis_client()
    if client is not None:
        if _script is None:
            _script = client.register_script(_INCR)
        return int(_script(keys=[cache.make_and_validate_key(key)], args=[amount, ttl], client=client))
    if cache.add(key, amount, ttl):
        return amount
    try:
        return cache.incr(key, amount)
    except ValueError:  # expired between add and incr
        cache.set(key, amount, ttl)
        return amount


_client: tuple[object, object] | None = None  # (the cache backend, its Redis client)


def _redis_client():
    """The Redis client behind the default cache, or None when the cache is not Redis. (The
    `cache` proxy's type is ConnectionProxy whatever is behind it: ask `caches` for the backend.)
    Kept for the backend's lifetime: Django builds a new redis-py client on every get_client(),
    which costs redis-py 8 more than the call it makes."""
    global _client
    backend = caches["default"]
    if "Redis" not in type(backend).__name__:
        return None
    if _client is None or _client[0] is not backend:
        _client = (backend, backend._cache.get_client(write=True))
    return _client[1]


# --- The API --------------------------------------------------------------------------------


class _WindowThrottle(BaseThrottle):
    scope = ""
    setting = ""
    default = ""
    reserved = False  # counted through `reservations` rather than call by call

    def __init__(self):
        self._wait: float | None = None

    def ident(self, request) -> str | None:
        raise NotImplementedError

    def allow_request(self, request, view) -> bool:
        ident = self.ident(request)
        if ident is None:
            return True
        recorded = getattr(getattr(request, "_request", request), "throttle_outcomes", {})
        if (self.scope, ident) in recorded:  # counted already for this request (usage.apis)
            self._wait = recorded[(self.scope, ident)]
            return self._wait is None
        limit, period = parse_rate(getattr(settings, self.setting, self.default))
        hit = reservations.hit if self.reserved else window_hit
        self._wait = hit(self.scope, ident, limit, period)
        return self._wait is None

    def wait(self) -> float | None:
        return self._wait


class ApiKeyThrottle(_WindowThrottle):
    """Calls per API key (or per signed-in person using the API from the dashboard)."""

    scope, setting, default = "key", "API_RATE_PER_KEY", "60000/min"
    reserved = True

    @classmethod
    def record(cls, django_request, api_key) -> bool:
        """Count a call of `api_key` before DRF's dispatch (usage.apis.fast_ingest) and leave the
        outcome on the request, where this throttle finds it should the DRF view answer the call
        after all: one count per call. True when within the limit."""
        limit, period = parse_rate(getattr(settings, cls.setting, cls.default))
        ident = f"key:{api_key.pk}"
        wait = reservations.hit(cls.scope, ident, limit, period)
        django_request.throttle_outcomes = {(cls.scope, ident): wait}
        return wait is None

    def ident(self, request) -> str | None:
        auth = getattr(request, "auth", None)
        if auth is not None and getattr(auth, "pk", None) is not None:
            return f"key:{auth.pk}"
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and getattr(user, "pk", None) is not None:
            return f"user:{user.pk}"
        return None


def anonymous_hit(request) -> None:
    """Count an unauthenticated API call from this client; past the limit, answer 429."""
    limit, period = parse_rate(getattr(settings, "API_RATE_ANONYMOUS", "120/min"))
    wait = window_hit("anon", client_address(request), limit, period)
    if wait is not None:
        raise exceptions.Throttled(wait=wait)


def api_key_failure(request) -> None:
    """Count a failed API-key authentication from this client; past the limit, answer 429."""
    limit, period = parse_rate(getattr(settings, "API_AUTH_FAILURES_PER_ADDRESS", "30/min"))
    wait = window_hit("keyfail", client_address(request), limit, period)
    if wait is not None:
        raise exceptions.Throttled(wait=wait, detail="Too many requests with unknown API keys from this address.")


# --- Sign-in ----------------------------------------------------------------------------------

LOGIN_WINDOW = 15 * 60
LOCKOUT_MEMORY = 24 * 3600


def _login_keys(kind: str, ident: str) -> tuple[str, str, str]:
    digest = _digest(ident)
    return f"login:fail:{kind}:{digest}", f"login:lock:{kind}:{digest}", f"login:lockouts:{kind}:{digest}"


def _subjects(username: str, address: str) -> list[tuple[str, str, int]]:
    subjects = [("addr", address, int(getattr(settings, "LOGIN_FAILURES_PER_ADDRESS", 20)))]
    if username:
        subjects.append(("acct", username.strip().lower(), int(getattr(settings, "LOGIN_FAILURES_PER_ACCOUNT", 5))))
    return subjects


def login_wait(username: str, address: str) -> int:
    """Seconds until this account and address may try again (0: now)."""
    now = time.time()
    wait = 0.0
    for kind, ident, _limit in _subjects(username, address):
        until = cache.get(_login_keys(kind, ident)[1])
        if until and until > now:
            wait = max(wait, until - now)
    return math.ceil(wait)


def login_failed(username: str, address: str) -> int:
    """Count a failed sign-in; locks the account or address past its limit, for a time that
    doubles with each lockout in a day. Returns the wait now imposed (0: none)."""
    base = int(getattr(settings, "LOGIN_LOCKOUT_SECONDS", 60))
    ceiling = int(getattr(settings, "LOGIN_LOCKOUT_MAX_SECONDS", 3600))
    now = time.time()
    wait = 0
    for kind, ident, limit in _subjects(username, address):
        fails_key, lock_key, lockouts_key = _login_keys(kind, ident)
        if not cache.add(fails_key, 1, LOGIN_WINDOW):
            try:
                fails = cache.incr(fails_key)
            except ValueError:
                cache.set(fails_key, 1, LOGIN_WINDOW)
                fails = 1
        else:
            fails = 1
        if fails >= limit:
            lockouts = cache.get(lockouts_key, 0) + 1
            cache.set(lockouts_key, lockouts, LOCKOUT_MEMORY)
            seconds = min(base * 2 ** (lockouts - 1), ceiling)
            cache.set(lock_key, now + seconds, seconds)
            cache.delete(fails_key)
            wait = max(wait, seconds)
    return wait


def login_succeeded(username: str) -> None:
    fails_key, _, lockouts_key = _login_keys("acct", username.strip().lower())
    cache.delete_many([fails_key, lockouts_key])


# --- Password reset ---------------------------------------------------------------------------


def password_reset_allowed(email: str, address: str) -> tuple[bool, bool]:
    """(this client may submit the form, a mail may go to this address)."""
    per_client = int(getattr(settings, "PASSWORD_RESETS_PER_CLIENT", 20))
    per_address = int(getattr(settings, "PASSWORD_RESETS_PER_ADDRESS", 3))
    client_ok = window_hit("reset-client", address, per_client, 3600) is None
    mail_ok = client_ok and window_hit("reset-mail", email.strip().lower(), per_address, 3600) is None
    return client_ok, mail_ok

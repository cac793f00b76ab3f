"""Reads from PostgreSQL replicas, where a little lag is harmless (issue 13).

`DATABASE_REPLICA_URLS` (comma-separated) adds the aliases `replica_1`, `replica_2`, … Reads go to
a replica only inside `replica_reads` (a decorator and a context manager), which the read-only
pages and the usage API use: the overview, the usage pages and their export, the statements, their
preview, print view and CSV, and `GET /api/v1/usage`. Everything else reads the primary: whatever
writes, and every read that must see a write just made (ingestion, the allowance and its hard
limits, the close, payments, budgets, keys, members, staff pages). Inside `replica_reads`:

- a replica is used only while its lag is at most `REPLICA_MAX_LAG_SECONDS` (5), measured on the
  replica at most once a second per process (`lag_of`); past it, or unreachable, the primary
  answers (a replica that fails a check is left alone for 5 s);
- once the request writes anything (`db_for_write`), its later reads go to the primary;
- a person who has just written (any unsafe request that succeeded) reads from the primary for
  the next `2 × REPLICA_MAX_LAG_SECONDS`, by a cookie (`PrimaryAfterWriteMiddleware`): their own
  change is on the page they are sent to.

Writes, migrations and raw SQL through `django.db.connection` always go to the primary.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

logger = logging.getLogger(__name__)

PIN_COOKIE = "mb_primary"
_FAILED_FOR = 5.0  # seconds a replica that failed its lag check is not used
_CHECK_EVERY = 1.0  # seconds a lag reading is reused

_LAG_SQL = (
    "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0 "
    "WHEN EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') "
    "AND pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
    "ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 1e9) END"
)


@dataclass
class _Reads:
    alias: str | None  # the replica chosen for this request, or None: the primary
    wrote: bool = False


_current: contextvars.ContextVar[_Reads | None] = contextvars.ContextVar("mb_replica_reads", default=None)
_lags: dict[str, tuple[float, float]] = {}  # alias → (checked at, lag seconds; inf when failed)
_turn = itertools.count()


def replica_aliases() -> list[str]:
    return list(getattr(settings, "DATABASE_REPLICAS", []))


def lag_of(alias: str) -> float:
    """The replica's lag in seconds (0 when caught up with what it received, or not a replica),
    infinite when it cannot be asked; reused for a second (5 s after a failure)."""
    now = time.monotonic()
    checked = _lags.get(alias)
    if checked is not None:
        at, lag = checked
        if now - at < (_FAILED_FOR if lag == float("inf") else _CHECK_EVERY):
            return lag
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute(_LAG_SQL)
            lag = float(cursor.fetchone()[0])
    except Exception as exc:  # noqa: BLE001 (an unusable replica is skipped, never an error page)
        logger.warning("replica %s unusable for %.0f s: %s", alias, _FAILED_FOR, exc)
        lag = float("inf")
    _lags[alias] = (now, lag)
    return lag


def lags_forget() -> None:
    _lags.clear()


def _choose() -> str | None:
    aliases = replica_aliases()
    if not aliases:
        return None
    limit = float(getattr(settings, "REPLICA_MAX_LAG_SECONDS", 5))
    start = next(_turn)
    for offset in range(len(aliases)):
        alias = aliases[(start + offset) % len(aliases)]
        if lag_of(alias) <= limit:
            return alias
    return None


@contextmanager
def reading_from_replica(*, allowed: bool = True):
    """Reads inside go to a replica within the lag bound (the primary when there is none)."""
    token = _current.set(_Reads(alias=_choose() if allowed else None))
    try:
        yield
    finally:
        _current.reset(token)


def replica_reads(view):
    """A view whose reads may come from a replica (see the module's docstring)."""

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        pinned = PIN_COOKIE in getattr(request, "COOKIES", {})
        with reading_from_replica(allowed=not pinned):
            return view(request, *args, **kwargs)

    return wrapped


def current_read_alias() -> str:
    state = _current.get()
    return state.alias if state is not None and state.alias and not state.wrote else DEFAULT_DB_ALIAS


class ReplicaRouter:
    def db_for_read(self, model, **hints):
        state = _current.get()
        if state is None or state.alias is None or state.wrote:
            return None  # the primary
        return state.alias

    def db_for_write(self, model, **hints):
        state = _current.get()
        if state is not None:
            state.wrote = True
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1, obj2, **hints):
        return True  # every alias is the same database

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == DEFAULT_DB_ALIAS


class PrimaryAfterWriteMiddleware:
    """After a request that may have written (any method but GET, HEAD, OPTIONS, TRACE) and
    succeeded, the client reads from the primary for 2 × REPLICA_MAX_LAG_SECONDS."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if replica_aliases() and request.method not in ("GET", "HEAD", "OPTIONS", "TRACE") and response.status_code < 400:
            seconds = int(2 * float(getattr(settings, "REPLICA_MAX_LAG_SECONDS", 5))) + 1
            response.set_cookie(PIN_COOKIE, "1", max_age=seconds, httponly=True, samesite="Lax",
                                secure=request.is_secure())  # fmt: skip
        return response

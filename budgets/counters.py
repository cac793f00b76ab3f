"""Month-to-date spend counters and cached hard limits for the allowance; the "evaluation pending"
marker.

Ingestion keeps the counters (integer micro-dollars per workspace and per API key and UTC month);
the allowance API reads them, so a crossing shows there as soon as the event is committed, with no
worker involved. With Redis (REDIS_URL) they live there; without it the allowance reads the month's
rollups instead (one indexed SUM), which is as fresh.

Why the counters stay correct (Redis). A counter is created only from a database sum, and from
then on moved only by ingestion, which adds the events it newly inserted once they are committed
(never duplicates). Two races must neither miss an event nor count it twice: an ingestion that
commits while a reader sums (its events may or may not be in the sum), and one whose step after
the commit comes after the reader stored its sum.

On PostgreSQL, one Redis round trip per request (after the commit; issue 12):
  - the reader sums the rollups and, in the same statement, takes the statement's snapshot
    (`pg_current_snapshot()`: which transactions it sees); it stores the sum with the snapshot
    beside it, in one Lua script, only if `generation` did not move since it looked;
  - ingestion's statement returns its transaction id; after the commit (`ingest_committed`) one
    script adds the amounts to each counter that exists, unless the transaction is visible in the
    counter's snapshot (then the sum has these events already), and bumps `generation`.
  A sum that lacks an ingestion is refused (that ingestion bumps the generation after its commit,
  hence after the reader looked), or stored before the ingestion's step and then added to (its
  transaction is not in the snapshot); a sum that has it is never added to again. Exact.
Elsewhere (SQLite with Redis), two round trips:
  1. before its events are stored:     INCR  inflight                       (`ingest_started`)
  2. after they are committed:         INCRBY each counter that exists by the amounts of the events
                                       newly inserted; DECR inflight; INCR generation
  and the reader stores its sum only if the generation is unchanged and nothing is in flight.
A refused store is not an error: that call answers from the database sum. Counters live
COUNTER_TTL seconds and the in-flight marker INFLIGHT_TTL after its last use, so whatever a crash
or a lost Redis connection leaves behind heals within minutes; a Redis error never fails ingestion.
(During a rolling upgrade from the in-flight protocol a counter may over-count, never under-count,
until it expires.) The hard-limit budgets are cached beside the counters by the same rule
(`allowance_inputs`, `limits_changed`), so an allowance call is one Redis round trip.

Why a restarted Redis cannot fool them. A Redis restarted from its snapshot (RDB, or AOF every
second) brings back old counters, cached limits and generations, which the rules above cannot tell
from current ones. So each counter and the cached limits carry, in a `:run` key beside them, the
`run_id` of the Redis instance that built them (it changes on every start, and differs on a
replica promoted by a failover); the reader fetches the instance's `run_id` (INFO server) in the
same pipeline as the values and trusts a value only if its run id is the current one. Anything
else, a missing run id included, is treated as absent: answered from the database and rebuilt
by the same guarded store (which overwrites it). Ingestion may still add to such a value; nobody
reads it. An ingestion in flight across the restart may be counted twice in the rebuilt counter
(an over-count, never an under-count), until the counter expires.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Callable
from datetime import date

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Q, Sum

from usage.models import DailyRollup

from . import counter_scripts as scripts

logger = logging.getLogger(__name__)

COUNTER_TTL = 5 * 60  # seconds; a counter is rebuilt from the rollups at least this often
INFLIGHT_TTL = 5 * 60  # longer than any ingestion transaction
GENERATION_TTL = 24 * 3600
# The "evaluation pending" mark lives at most this long. It only stops requests from enqueueing a
# second evaluation while one waits in the queue (the task clears it as it starts, within
# milliseconds on a healthy worker); a worker that dies holding the task before it started leaves
# the mark behind, and the next request once it has expired (the beat's, each minute) enqueues
# the evaluation again: a lost evaluation is redone within PENDING_TTL + 60 s. It was 5 minutes.
PENDING_TTL = 30
# Without Redis the mark lives in each web process's memory, where the worker cannot clear it: it
# lasts this long instead, and the evaluation it enqueues runs this much later (evaluation_delay),
# so that it sees every change that found the mark set.
LOCAL_PENDING_SECONDS = 1.0
LIMITS_TTL = 60  # the hard limits are re-read at least this often (e.g. after a change made outside the services)

class _Redis:
    """One client and its scripts per process (redis-py resets its pool after a fork)."""

    def __init__(self, url: str):
        import redis

        self.errors = (redis.RedisError, OSError)
        self.client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.commit = self.client.register_script(scripts.COMMIT)
        self.start = self.client.register_script(scripts.START)
        self.release = self.client.register_script(scripts.RELEASE)
        self.store = self.client.register_script(scripts.STORE)
        self.store_limits = self.client.register_script(scripts.STORE_LIMITS)
        self.limits_changed = self.client.register_script(scripts.LIMITS_CHANGED)


_redis: _Redis | None = None


def _backend() -> _Redis | None:
    global _redis
    if not settings.REDIS_URL:
        return None
    if _redis is None:
        _redis = _Redis(settings.REDIS_URL)
    return _redis


def key_prefix() -> str:
    """Keys are namespaced by database, so that two databases (development, benchmark, tests)
    sharing one Redis never read each other's counters; `{w<id>}` keeps a workspace's keys in one
    Redis Cluster slot, as the scripts need."""
    database = str(connection.settings_dict["NAME"])
    return f"mb:budgets:{zlib.crc32(database.encode()):08x}"


def _keys(workspace_id: int) -> tuple[str, str, str]:
    base = f"{key_prefix()}:{{w{workspace_id}}}"
    return f"{base}:inflight", f"{base}:generation", f"{base}:pending"


def _counter_keys(workspace_id: int, api_key_id: int, period: date) -> tuple[str, str]:
    base = f"{key_prefix()}:{{w{workspace_id}}}:spend:{period:%Y-%m}"
    return f"{base}:workspace", f"{base}:key:{api_key_id}"


def _run_keys(counters: tuple[str, ...] | list[str]) -> list[str]:
    """Beside each counter, the run id of the Redis instance that built it (`allowance_inputs`)."""
    return [f"{counter}:run" for counter in counters]


def _snapshot_keys(counters: tuple[str, ...] | list[str]) -> list[str]:
    """Beside each counter, the PostgreSQL snapshot of the sum it was built from."""
    return [f"{counter}:snapshot" for counter in counters]


def uses_snapshots() -> bool:
    """PostgreSQL: ingestion needs no round trip before it stores (module docstring)."""
    return connection.vendor == "postgresql"


# --- Ingestion -------------------------------------------------------------------------------


def ingest_started(workspace_id: int) -> bool | None:
    """Step 1 (not on PostgreSQL: None, nothing to do): an ingestion of `workspace_id` is about to
    store events. True when recorded, False when Redis could not record it."""
    backend = _backend()
    if backend is None:
        return False
    if uses_snapshots():
        return None
    inflight, _, _ = _keys(workspace_id)
    try:
        backend.start(keys=[inflight], args=[INFLIGHT_TTL])
        return True
    except backend.errors as exc:
        logger.warning("spend counters: Redis unavailable at ingestion start (%s)", exc)
        return False


def ingest_released(workspace_id: int, *, started: bool | None) -> None:
    """Step 2 when nothing new was stored (all duplicates, or the store failed)."""
    backend = _backend()
    if backend is None or started is not True:
        return
    inflight, _, _ = _keys(workspace_id)
    try:
        backend.release(keys=[inflight])
    except backend.errors as exc:
        logger.warning("spend counters: Redis unavailable at ingestion release (%s)", exc)


def ingest_committed(
    workspace_id: int,
    api_key_id: int,
    micros_by_period: dict[date, int],
    *,
    started: bool | None,
    transaction_id: str | None = None,
) -> bool:
    """Step 2, after the commit: add the newly inserted events' amounts (USD × 10⁶, per UTC month)
    to the counters that exist (on PostgreSQL, those whose snapshot does not show `transaction_id`,
    the storing transaction's id), and mark an evaluation pending. True when this call set the mark
    (the caller then enqueues the evaluation): at most one is pending per workspace. `started` is
    what `ingest_started` answered."""
    backend = _backend()
    if backend is None:
        return evaluation_pending_set(workspace_id)
    inflight, generation, pending = _keys(workspace_id)
    counters: list[str] = []
    deltas: list[int] = []
    for period, micros in sorted(micros_by_period.items()):
        counters.extend(_counter_keys(workspace_id, api_key_id, period))
        deltas.extend((micros, micros))
    try:
        if started is False or (started is None and not transaction_id and counters):
            # Step 1 did not happen (or, on PostgreSQL, the transaction is unknown), so a reader
            # may have stored a sum that has these events already: drop the counters rather
            # than add to them.
            backend.client.delete(*counters)
            counters, deltas = [], []
        marked = backend.commit(
            keys=[inflight, generation, pending, *counters, *_snapshot_keys(counters)],
            args=["1" if started else "0", GENERATION_TTL, PENDING_TTL, transaction_id or "", *deltas],
        )
        return bool(marked)
    except backend.errors as exc:
        # The counters may now lack these amounts: drop them so that the next read rebuilds.
        logger.warning("spend counters: Redis unavailable after ingestion (%s)", exc)
        try:
            if counters:
                backend.client.delete(*counters)
        except backend.errors:
            pass
        return False


# --- Reading -----------------------------------------------------------------------------------


def _database_sums(workspace_id: int, api_key_id: int, period: date) -> tuple[int, int]:
    workspace_micros, key_micros, _ = _database_sums_seen(workspace_id, api_key_id, period)
    return workspace_micros, key_micros


def _database_sums_seen(workspace_id: int, api_key_id: int, period: date) -> tuple[int, int, str]:
    """The month's sums from the rollups, and on PostgreSQL the snapshot they were read in
    (`xmin:xmax:xip,...`; '' elsewhere)."""
    end = date(period.year + period.month // 12, period.month % 12 + 1, 1)
    if uses_snapshots():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_current_snapshot()::text, coalesce(sum(amount_micros), 0), "
                "coalesce(sum(amount_micros) FILTER (WHERE api_key_id = %s), 0) "
                "FROM usage_dailyrollup WHERE workspace_id = %s AND day >= %s AND day < %s",
                [api_key_id, workspace_id, period, end],
            )
            snapshot, workspace_micros, key_micros = cursor.fetchone()
        return int(workspace_micros), int(key_micros), snapshot
    totals = DailyRollup.objects.filter(workspace_id=workspace_id, day__gte=period, day__lt=end).aggregate(
        workspace=Sum("amount_micros"), key=Sum("amount_micros", filter=Q(api_key_id=api_key_id))
    )
    return int(totals["workspace"] or 0), int(totals["key"] or 0), ""


Limits = list[tuple[int | None, int]]  # the workspace's hard-limit budgets: (api key id or None, amount micros)


def _limits_keys(workspace_id: int) -> tuple[str, str]:
    base = f"{key_prefix()}:{{w{workspace_id}}}"
    return f"{base}:limits", f"{base}:limits-generation"


def month_to_date(workspace_id: int, api_key_id: int, period: date) -> tuple[int, int]:
    """(workspace spend, this key's spend) in `period` (the 1st of a UTC month), micro-dollars,
    including every event committed before the call."""
    workspace_micros, key_micros, _ = allowance_inputs(workspace_id, api_key_id, period, load_limits=None)
    return workspace_micros, key_micros


def allowance_inputs(
    workspace_id: int, api_key_id: int, period: date, *, load_limits: Callable[[], Limits] | None
) -> tuple[int, int, Limits]:
    """Month-to-date spend of the workspace and of the key (micro-dollars) and the workspace's hard
    limits, in one Redis round trip when both are cached.

    The limits are cached like the counters: `limits_changed` (after a budget is saved or deleted)
    bumps their generation and drops them; a reader that rebuilt them from the database
    (`load_limits`) stores them only if the generation did not move meanwhile. So the answer after
    a budget change has committed is never the old one (raising a budget unblocks at once).
    With `load_limits` None the limits are neither read nor returned (an empty list)."""
    if load_limits is None:
        load_limits = list
        wants_limits = False
    else:
        wants_limits = True
    backend = _backend()
    if backend is None:
        return (*_database_sums(workspace_id, api_key_id, period), load_limits())
    inflight, generation, _ = _keys(workspace_id)
    counters = _counter_keys(workspace_id, api_key_id, period)
    runs = _run_keys(counters)
    limits_key, limits_generation = _limits_keys(workspace_id)
    (limits_run,) = _run_keys([limits_key])
    try:
        # One round trip: the values and the identity of the instance that holds them.
        pipe = backend.client.pipeline(transaction=False)
        pipe.mget([*counters, *runs, inflight, generation, limits_key, limits_generation, limits_run])
        pipe.info("server")
        values, info = pipe.execute()
        run_id = str(info["run_id"])
    except backend.errors as exc:
        logger.warning("spend counters: Redis unavailable, reading the database (%s)", exc)
        return (*_database_sums(workspace_id, api_key_id, period), load_limits())
    workspace_value, key_value, workspace_run, key_run, busy, seen, limits_value, limits_seen, limits_built = values
    current = run_id.encode()
    if not wants_limits:
        limits: Limits = []
    elif limits_value is not None and limits_built == current:
        limits = [(key_id, micros) for key_id, micros in json.loads(limits_value)]
    else:
        limits = load_limits()
        try:
            backend.store_limits(
                keys=[limits_generation, limits_key, limits_run],
                args=[(limits_seen or b"").decode(), json.dumps(limits), LIMITS_TTL, run_id],
            )
        except backend.errors as exc:
            logger.warning("spend counters: could not store the hard limits (%s)", exc)
    if workspace_value is not None and key_value is not None and workspace_run == current and key_run == current:
        return int(workspace_value), int(key_value), limits
    # Missing, or built by another Redis instance (a restart from a snapshot, a failover): rebuild.
    *sums, snapshot = _database_sums_seen(workspace_id, api_key_id, period)
    if int(busy or 0) <= 0:
        try:
            backend.store(
                keys=[inflight, generation, *counters, *runs, *_snapshot_keys(counters)],
                args=[(seen or b"").decode(), COUNTER_TTL, run_id, snapshot, *sums],
            )
        except backend.errors as exc:
            logger.warning("spend counters: could not store a rebuilt counter (%s)", exc)
    return (*sums, limits)


def limits_changed(workspace_id: int) -> None:
    """A hard-limit budget of the workspace was saved or deleted (call after the commit)."""
    backend = _backend()
    if backend is None:
        return
    try:
        backend.limits_changed(keys=list(_limits_keys(workspace_id)), args=[GENERATION_TTL])
    except backend.errors as exc:
        logger.error("budgets: could not drop the cached hard limits of workspace %s (%s)", workspace_id, exc)


# --- The pending-evaluation mark ---------------------------------------------------------------


def evaluation_pending_set(workspace_id: int) -> bool:
    """Mark an evaluation pending; True when it was not already (then enqueue one, delayed by
    `evaluation_delay()`)."""
    backend = _backend()
    _, _, pending = _keys(workspace_id)
    if backend is None:
        return cache.add(pending, 1, timeout=LOCAL_PENDING_SECONDS)
    try:
        return bool(backend.client.set(pending, 1, nx=True, ex=PENDING_TTL))
    except backend.errors as exc:
        logger.warning("budgets: Redis unavailable for the pending mark (%s)", exc)
        return True  # enqueue anyway: an extra evaluation is harmless, a missing one is not


def evaluation_delay() -> float:
    """Seconds to wait before running an evaluation just marked pending: none with Redis (the task
    clears the mark when it starts), the local mark's lifetime without."""
    return 0.0 if _backend() is not None else LOCAL_PENDING_SECONDS


def evaluation_pending_clear(workspace_id: int) -> None:
    """The evaluation is starting: changes from now on need another one."""
    backend = _backend()
    _, _, pending = _keys(workspace_id)
    if backend is None:
        cache.delete(pending)
        return
    try:
        backend.client.delete(pending)
    except backend.errors as exc:
        logger.warning("budgets: Redis unavailable to clear the pending mark (%s)", exc)

"""What the threaded and the asyncio clients share: the retry policy, how an answer is read, the
per-item outcomes, the counters and the hard limit's answer. No I/O here: each client does its own
waiting and sending, then asks this module what an answer means."""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timezone
from decimal import Decimal
from typing import Any

import httpx

logger = logging.getLogger("meterboard")

EVENTS_PATH = "/api/v1/events"
QUOTE_PATH = "/api/v1/quote"
ALLOWANCE_PATH = "/api/v1/allowance"
MAX_BATCH = 1_000  # the API's limit per request

# Per-item statuses. The first four are the server's; `failed` means the client gave up (a 4xx for
# the whole batch, or retries exhausted), `dropped` that the queue was full under the drop policy.
ACCEPTED, DUPLICATE, CONFLICT, REJECTED, FAILED, DROPPED = (
    "accepted", "duplicate", "conflict", "rejected", "failed", "dropped")  # fmt: skip
DELIVERED = frozenset((ACCEPTED, DUPLICATE))


class MeterboardError(Exception):
    """An answer the client cannot use: `status` is the HTTP status (None for a connection
    error), `errors` the server's field errors when it gave any."""

    def __init__(self, message: str, *, status: int | None = None, errors: dict | None = None):
        super().__init__(message)
        self.status, self.errors = status, errors or {}


@dataclass(frozen=True)
class Outcome:
    """What became of one tracked event. `delivered` (accepted now, or a duplicate of one stored
    before: a retry) means it is stored exactly once; otherwise `errors` says why not."""

    event_id: str
    status: str
    amount: Decimal | None = None  # USD, 6 dp, as the server priced it
    errors: dict[str, list[str]] = field(default_factory=dict)
    event: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def delivered(self) -> bool:
        return self.status in DELIVERED


@dataclass(frozen=True)
class Stats:
    """Counts since the client was made. Every tracked event ends in exactly one of accepted,
    duplicate, conflict, rejected, failed or dropped; `pending` are queued or in flight."""

    queued: int = 0  # tracked and put on the queue
    sent: int = 0  # events in requests the server answered with per-item results
    accepted: int = 0
    duplicate: int = 0
    conflict: int = 0
    rejected: int = 0
    failed: int = 0
    dropped: int = 0
    retries: int = 0  # requests sent again after a connection error, a 5xx, 408 or 429
    requests: int = 0
    splits: int = 0  # batches halved after a 413

    @property
    def delivered(self) -> int:
        return self.accepted + self.duplicate

    @property
    def pending(self) -> int:
        return self.queued - (self.accepted + self.duplicate + self.conflict + self.rejected + self.failed)


class Counters:
    """The mutable side of Stats, safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(Stats.__dataclass_fields__, 0)

    def add(self, **amounts: int) -> None:
        with self._lock:
            for name, amount in amounts.items():
                self._values[name] += amount

    def snapshot(self) -> Stats:
        with self._lock:
            return Stats(**self._values)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: the n-th wait is uniform in [0, min(cap, initial × 2ⁿ)],
    or the server's `Retry-After` (429, 503) when it gives one (at most `retry_after_cap`).
    After `max_elapsed` seconds on one request the client gives up and reports its events as
    `failed` (None: never give up, as long as the client is not closed past its timeout)."""

    initial: float = 0.1  # seconds
    cap: float = 5.0
    max_elapsed: float | None = 300.0
    retry_after_cap: float = 60.0

    def backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.cap, self.initial * 2**attempt))

    def wait(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.retry_after_cap)
        return self.backoff(attempt)


def retry_after_seconds(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """`Retry-After` as seconds: a number, or an HTTP date (RFC 9110 §10.2.3); None if absent or
    unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, moment.timestamp() - now())


@dataclass(frozen=True)
class Decision:
    """What to do after one attempt: `done` (per-item `results`), `retry` (after `retry_after`
    seconds if the server said), `split` (413: send halves) or `fail` (a 4xx: retrying cannot help)."""

    action: str
    results: list[dict] | None = None
    retry_after: float | None = None
    error: str = ""
    status: int | None = None


RETRYABLE_4XX = frozenset((408, 429))


def decide(response: httpx.Response | None, error: Exception | None = None, *, per_item: bool = True) -> Decision:
    """`per_item`: a 200 must carry the events' results (POST /events), else any 200 is done."""
    if response is None:
        return Decision("retry", error=f"{type(error).__name__}: {error}")
    status = response.status_code
    detail = _detail(response)
    if status == 200 and not per_item:
        return Decision("done", status=status)
    if status == 200:
        try:
            results = response.json()["results"]
            if isinstance(results, list):
                return Decision("done", results=results, status=status)
        except (ValueError, KeyError, TypeError):
            pass
        return Decision("retry", error="200 without per-item results (a proxy?)", status=status)
    if status == 413:
        return Decision("split", error=f"413: {detail}", status=status)
    if status >= 500 or status in RETRYABLE_4XX:
        return Decision("retry", retry_after=retry_after_seconds(response.headers.get("Retry-After")),
                        error=f"{status}: {detail}", status=status)  # fmt: skip
    return Decision("fail", error=f"{status}: {detail}", status=status)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return body["detail"]
    return json.dumps(body)[:500]


def outcomes_of(results: list[dict], batch: Sequence[dict]) -> list[Outcome] | None:
    """Each event's outcome from a 200's results (matched by index); None if they do not match the
    batch (then the batch is sent again: every event has its id, so that is safe)."""
    if len(results) != len(batch):
        return None
    outcomes = []
    for result, event in zip(sorted(results, key=lambda r: r.get("index", -1)), batch, strict=True):
        status = result.get("status")
        if status not in (ACCEPTED, DUPLICATE, CONFLICT, REJECTED):
            return None
        amount = result.get("amount")
        outcomes.append(Outcome(event_id=event["event_id"], status=status, errors=result.get("errors") or {},
                                amount=Decimal(amount) if amount is not None else None, event=event))  # fmt: skip
    return outcomes


def failed(batch: Sequence[dict], error: str) -> list[Outcome]:
    return [Outcome(event_id=event["event_id"], status=FAILED, errors={"non_field_errors": [error]}, event=event)
            for event in batch]  # fmt: skip


def encode(batch: Sequence[dict]) -> bytes:
    return json.dumps({"events": list(batch)}, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True)
class Allowance:
    """The hard limit's answer. `source` is `server`, or `fail_open` / `fail_closed` when the
    server could not answer (then `reason` says why, and `allowed` is the caller's choice). True in
    a boolean context when allowed."""

    allowed: bool
    reason: str | None = None
    spend: Decimal | None = None  # USD this month
    budget: Decimal | None = None  # USD, the binding hard-limit budget
    remaining: Decimal | None = None
    source: str = "server"
    checked_at: float = 0.0  # time.monotonic() of the answer

    def __bool__(self) -> bool:
        return self.allowed


def allowance_of(response: httpx.Response | None, error: Exception | None, *, fail_open: bool, at: float) -> Allowance:
    if response is not None and response.status_code == 200:
        try:
            body = response.json()
            return Allowance(allowed=bool(body["allowed"]), reason=body.get("reason"), spend=_money(body.get("spend")),
                             budget=_money(body.get("budget")), remaining=_money(body.get("remaining")),
                             checked_at=at)  # fmt: skip
        except (ValueError, KeyError, TypeError) as bad:
            error = bad
    why = f"{response.status_code}: {_detail(response)}" if response is not None and error is None else f"{type(error).__name__}: {error}"
    if response is not None and response.status_code in (401, 403):
        logger.error("Meterboard refused the allowance check (%s): check the API key", why)
    source = "fail_open" if fail_open else "fail_closed"
    return Allowance(allowed=fail_open, reason=f"Meterboard did not answer the allowance check ({why}); {source}.",
                     source=source, checked_at=at)  # fmt: skip


def _money(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


@dataclass(frozen=True)
class Quote:
    unit_price: Decimal  # USD, 6 dp
    quantity: int
    amount: Decimal  # USD, 6 dp
    currency: str
    price_book: int


def quote_of(response: httpx.Response) -> Quote:
    if response.status_code == 200:
        body = response.json()
        return Quote(unit_price=Decimal(body["unit_price"]), quantity=int(body["quantity"]), amount=Decimal(body["amount"]),
                     currency=body["currency"], price_book=int(body["price_book"]))  # fmt: skip
    try:
        body = response.json()
    except ValueError:
        body = {}
    errors = body if isinstance(body, dict) and "detail" not in body else {}
    raise MeterboardError(f"quote refused: {response.status_code}: {_detail(response)}", status=response.status_code,
                          errors=errors)  # fmt: skip


def log_outcome(outcome: Outcome) -> None:
    if outcome.status in (CONFLICT, REJECTED, FAILED):
        logger.warning("Meterboard event %s %s: %s", outcome.event_id, outcome.status, json.dumps(outcome.errors))


def headers(api_key: str) -> dict[str, str]:
    from . import __version__

    return {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json",
            "User-Agent": f"meterboard-python/{__version__}"}  # fmt: skip

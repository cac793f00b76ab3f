"""The threaded client: `track()` puts an event on a bounded queue and returns; one daemon thread
sends batches of up to 1,000 events, at most a second after the first of them was tracked, and
retries each batch until the server has answered for every event in it."""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from ._core import (
    ALLOWANCE_PATH,
    DROPPED,
    EVENTS_PATH,
    MAX_BATCH,
    QUOTE_PATH,
    Allowance,
    Counters,
    Decision,
    MeterboardError,
    Outcome,
    Quote,
    RetryPolicy,
    Stats,
    allowance_of,
    decide,
    encode,
    failed,
    headers,
    log_outcome,
    outcomes_of,
    quote_of,
)  # fmt: skip
from .events import Event, body_of

logger = logging.getLogger("meterboard")

_WAKE, _STOP = object(), object()
_SPLIT = "split"
QUOTE_ATTEMPTS = 3


class Meterboard:
    """Report usage to Meterboard from any number of threads.

    `when_full` is what `track()` does when `max_queue` events wait already: `"block"` (the
    default: wait for room, at most `block_timeout` seconds if given, then drop) or `"drop"` (drop
    the event at once). A dropped event is counted (`stats.dropped`), logged, reported to
    `on_result` with status `dropped`, and `track()` returns None for it.

    `on_result(outcome)` is called on the sender thread once for every tracked event (keep it
    quick; `queue.Queue().put` makes a results queue). Rejected and conflicting events, and events
    the client gave up on, are also logged (logger `meterboard`) with their errors.
    """

    def __init__(
        self, api_key: str, base_url: str, *, max_queue: int = 100_000, when_full: str = "block",
        block_timeout: float | None = None, batch_size: int = MAX_BATCH, flush_interval: float = 1.0,
        retry: RetryPolicy | None = None, timeout: float = 30.0, on_result: Callable[[Outcome], Any] | None = None,
        allowance_ttl: float = 1.0, fail_open: bool = True, allowance_timeout: float = 2.0,
        close_timeout_at_exit: float | None = 30.0, transport: httpx.BaseTransport | None = None,
    ):  # fmt: skip
        if when_full not in ("block", "drop"):
            raise ValueError("when_full is 'block' or 'drop'.")
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size is 1 to {MAX_BATCH}.")
        if max_queue < 1:
            raise ValueError("max_queue is at least 1.")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._max_queue, self._when_full, self._block_timeout = max_queue, when_full, block_timeout
        self._batch_size, self._flush_interval = batch_size, flush_interval
        self._retry = retry or RetryPolicy()
        self._timeout, self._transport = timeout, transport
        self._on_result = on_result
        self._allowance_ttl, self._fail_open, self._allowance_timeout = allowance_ttl, fail_open, allowance_timeout
        self._allowance: Allowance | None = None
        self._allowance_lock = threading.Lock()
        self._counters = Counters()
        self._progress = threading.Condition()
        self._enqueued = self._completed = self._flush_target = 0
        self._closed = False
        self._abandon = threading.Event()
        self._start_lock = threading.Lock()
        self._pid: int | None = None
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._calls = self._http()
        ref = weakref.ref(self)

        def close_at_exit() -> None:
            client = ref()
            if client is not None:
                client.close(timeout=close_timeout_at_exit)

        self._atexit_hook = close_at_exit
        atexit.register(close_at_exit)

    # --- the caller's side -----------------------------------------------------------------------

    def track(self, event: Event | str, /, **fields: Any) -> str | None:
        """Queue one event and return its event_id at once (None if it was dropped). Either an
        Event (`Generation(model="sdxl", steps=30, width=1024, height=1024)`) or a feature name
        with its fields (`track("upscaling", quantity=2)`). Raises EventError for an event the
        server would reject, and RuntimeError once the client is closed."""
        if self._closed:
            raise RuntimeError("This Meterboard client is closed.")
        body = body_of(event, fields)
        sender_queue = self._sender()
        try:
            if self._when_full == "block":
                sender_queue.put(body, timeout=self._block_timeout)
            else:
                sender_queue.put_nowait(body)
        except queue.Full:
            self._dropped(body)
            return None
        with self._progress:
            self._enqueued += 1
        self._counters.add(queued=1)
        return body["event_id"]

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything tracked so far now, and wait until the server has answered for each
        event (or the client gave up on it). False if `timeout` seconds passed first."""
        with self._progress:
            target = self._enqueued
            self._flush_target = max(self._flush_target, target)
        self._wake()
        with self._progress:
            return self._progress.wait_for(lambda: self._completed >= target, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush (waiting at most `timeout` seconds), stop the sender and release the connections.
        Events still unsent after the timeout are reported `failed`. Runs at interpreter exit too
        (`close_timeout_at_exit`). True if everything was delivered or answered in time."""
        if self._closed:
            return True
        self._closed = True
        atexit.unregister(self._atexit_hook)
        done = self.flush(timeout) if self._thread is not None else True
        if not done:
            self._abandon.set()  # the sender fails what it holds and what is queued, without waiting
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(_STOP)
            thread.join(timeout=None if done else 30)
        self._calls.close()
        return done

    def __enter__(self) -> Meterboard:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def stats(self) -> Stats:
        return self._counters.snapshot()

    def allowed(self) -> Allowance:
        """May this key still spend? The hard limit's answer (`GET /api/v1/allowance`), remembered
        for `allowance_ttl` seconds. When the server cannot answer (down, timeout after
        `allowance_timeout`, a 5xx, a bad key) the answer is `fail_open` (allowed, by default),
        with `source` and `reason` saying so; that answer is remembered for the TTL too."""
        cached = self._allowance
        if cached is not None and time.monotonic() - cached.checked_at < self._allowance_ttl:
            return cached
        with self._allowance_lock:  # one caller asks; the others use its answer
            cached = self._allowance
            if cached is not None and time.monotonic() - cached.checked_at < self._allowance_ttl:
                return cached
            response, error = None, None
            try:
                response = self._calls.get(ALLOWANCE_PATH, timeout=self._allowance_timeout)
            except httpx.TransportError as problem:
                error = problem
            self._allowance = allowance_of(response, error, fail_open=self._fail_open, at=time.monotonic())
            return self._allowance

    def quote(self, event: Event | str, /, **fields: Any) -> Quote:
        """Price an event without storing it (`POST /api/v1/quote`). Retried a few times on
        connection errors, 5xx and 429; raises MeterboardError otherwise (`errors` per field)."""
        body = body_of(event, fields, for_quote=True)
        for attempt in range(QUOTE_ATTEMPTS):
            response, error = None, None
            try:
                response = self._calls.post(QUOTE_PATH, json=body)
            except httpx.TransportError as problem:
                error = problem
            decision = decide(response, error, per_item=False)
            if response is not None and decision.action != "retry":
                return quote_of(response)
            if attempt + 1 < QUOTE_ATTEMPTS:
                time.sleep(self._retry.wait(attempt, decision.retry_after))
        raise MeterboardError(f"quote failed after {QUOTE_ATTEMPTS} attempts: {decision.error}", status=decision.status)

    # --- plumbing --------------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=headers(self._api_key), timeout=self._timeout,
                            transport=self._transport)  # fmt: skip

    def _sender(self) -> queue.Queue:
        """The queue, with its sender thread started on first use, and started anew in a forked
        child (whose copy of the parent's queue is discarded: the parent sends those)."""
        if self._pid == os.getpid():
            return self._queue
        with self._start_lock:
            if self._pid != os.getpid():
                if self._pid is not None:  # a forked child: the parent's thread and sockets are not ours
                    self._queue = queue.Queue(maxsize=self._max_queue)
                    self._calls = self._http()
                    self._progress = threading.Condition()
                    self._enqueued = self._completed = self._flush_target = 0
                self._thread = threading.Thread(target=self._run, args=(self._queue,), name="meterboard-sender",
                                                daemon=True)  # fmt: skip
                self._thread.start()
                self._pid = os.getpid()
        return self._queue

    def _wake(self) -> None:
        try:
            self._queue.put_nowait(_WAKE)
        except queue.Full:
            pass  # the sender has work already, and will see the flush

    def _dropped(self, body: dict) -> None:
        self._counters.add(dropped=1)
        dropped = self._counters.snapshot().dropped
        if dropped == 1 or dropped % 1000 == 0:
            logger.warning("Meterboard queue full (%d events): %d events dropped so far", self._max_queue, dropped)
        self._tell(Outcome(event_id=body["event_id"], status=DROPPED, event=body,
                           errors={"non_field_errors": ["The client's queue was full."]}))  # fmt: skip

    def _run(self, sender_queue: queue.Queue) -> None:
        with self._http() as http:
            while True:
                batch, stop = self._collect(sender_queue)
                if batch:
                    try:
                        self._deliver(batch, http)
                    except Exception:  # never lose the thread (and with it every later event)
                        logger.exception("Meterboard sender failed on a batch of %d events", len(batch))
                        self._report(failed(batch, "the client failed to send it (see the log)"))
                if stop:
                    return

    def _collect(self, sender_queue: queue.Queue) -> tuple[list[dict], bool]:
        """Up to batch_size events: the first waited for, the rest for at most flush_interval
        after it, or none at all when a flush is waiting."""
        batch: list[dict] = []
        deadline = 0.0
        while len(batch) < self._batch_size:
            urgent = self._flush_target > self._completed or self._abandon.is_set()
            try:
                if not batch:
                    item = sender_queue.get()
                elif urgent:
                    item = sender_queue.get_nowait()
                else:
                    item = sender_queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            if item is _WAKE:
                continue
            if not batch:
                deadline = time.monotonic() + self._flush_interval
            batch.append(item)
        return batch, False

    def _deliver(self, batch: list[dict], http: httpx.Client) -> None:
        parts = [batch]
        while parts:
            part = parts.pop(0)
            outcomes = self._send(part, http)
            if outcomes == _SPLIT:
                half = len(part) // 2
                parts[0:0] = [part[:half], part[half:]]
                self._counters.add(splits=1)
                continue
            self._report(outcomes)

    def _send(self, part: Sequence[dict], http: httpx.Client) -> list[Outcome] | str:
        """One batch until the server answers for every event in it (a 200), it must be split
        (413), it cannot succeed (another 4xx), or the retry policy gives up."""
        payload = encode(part)
        started, attempt = time.monotonic(), 0
        while True:
            if self._abandon.is_set():
                return failed(part, "The client was closed before the server answered for this event.")
            response, error = None, None
            try:
                response = http.post(EVENTS_PATH, content=payload)
            except httpx.TransportError as problem:
                error = problem
            self._counters.add(requests=1)
            decision = decide(response, error)
            if decision.action == "done":
                outcomes = outcomes_of(decision.results or [], part)
                if outcomes is not None:
                    self._counters.add(sent=len(part))
                    return outcomes
                decision = Decision("retry", error="the results do not match the batch")
            if decision.action == "split":
                return _SPLIT if len(part) > 1 else failed(part, decision.error)
            if decision.action == "fail":
                logger.error("Meterboard refused a batch of %d events: %s (not retried)", len(part), decision.error)
                return failed(part, decision.error)
            wait = self._retry.wait(attempt, decision.retry_after)
            attempt += 1
            limit = self._retry.max_elapsed
            if limit is not None and time.monotonic() - started + wait > limit:
                return failed(part, f"Gave up after {attempt} attempts in {limit:.0f} s; last: {decision.error}")
            logger.info("Meterboard: %d events not delivered (%s); retry %d in %.2f s", len(part), decision.error,
                        attempt, wait)  # fmt: skip
            self._counters.add(retries=1)
            if self._abandon.wait(wait):
                return failed(part, "The client was closed before the server answered for this event.")

    def _report(self, outcomes: list[Outcome]) -> None:
        tally: dict[str, int] = {}
        for outcome in outcomes:
            tally[outcome.status] = tally.get(outcome.status, 0) + 1
            log_outcome(outcome)
            self._tell(outcome)
        self._counters.add(**tally)
        with self._progress:
            self._completed += len(outcomes)
            self._progress.notify_all()

    def _tell(self, outcome: Outcome) -> None:
        if self._on_result is None:
            return
        try:
            self._on_result(outcome)
        except Exception:
            logger.exception("Meterboard on_result callback failed for %s", outcome.event_id)

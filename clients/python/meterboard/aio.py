"""The asyncio client: the same promises as `Meterboard`, with one sender task on the running loop
and httpx.AsyncClient. Close it with `async with` or `await close()` (an event loop cannot be relied
on at interpreter exit, so there is no atexit hook here: in FastAPI, close it in the lifespan)."""

from __future__ import annotations

import asyncio
import logging
import time
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


class AsyncMeterboard:
    """`await track(...)` queues an event and returns its event_id (None if dropped): with
    `when_full="block"` it awaits room (at most `block_timeout` seconds if given), with `"drop"`
    it never waits. Everything else as in `Meterboard`."""

    def __init__(
        self, api_key: str, base_url: str, *, max_queue: int = 100_000, when_full: str = "block",
        block_timeout: float | None = None, batch_size: int = MAX_BATCH, flush_interval: float = 1.0,
        retry: RetryPolicy | None = None, timeout: float = 30.0, on_result: Callable[[Outcome], Any] | None = None,
        allowance_ttl: float = 1.0, fail_open: bool = True, allowance_timeout: float = 2.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ):  # fmt: skip
        if when_full not in ("block", "drop"):
            raise ValueError("when_full is 'block' or 'drop'.")
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size is 1 to {MAX_BATCH}.")
        self.base_url = base_url.rstrip("/")
        self._max_queue, self._when_full, self._block_timeout = max_queue, when_full, block_timeout
        self._batch_size, self._flush_interval = batch_size, flush_interval
        self._retry = retry or RetryPolicy()
        self._on_result = on_result
        self._allowance_ttl, self._fail_open, self._allowance_timeout = allowance_ttl, fail_open, allowance_timeout
        self._allowance: Allowance | None = None
        self._allowance_lock = asyncio.Lock()
        self._counters = Counters()
        self._progress = asyncio.Condition()
        self._enqueued = self._completed = self._flush_target = 0
        self._closed = False
        self._abandon = asyncio.Event()
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=max_queue)
        self._task: asyncio.Task | None = None
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=headers(api_key), timeout=timeout,
                                       transport=transport)  # fmt: skip

    async def track(self, event: Event | str, /, **fields: Any) -> str | None:
        if self._closed:
            raise RuntimeError("This Meterboard client is closed.")
        body = body_of(event, fields)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="meterboard-sender")
        try:
            if self._when_full == "drop":
                self._queue.put_nowait(body)
            elif self._block_timeout is None:
                await self._queue.put(body)
            else:
                await asyncio.wait_for(self._queue.put(body), self._block_timeout)
        except (asyncio.QueueFull, TimeoutError):
            self._counters.add(dropped=1)
            logger.warning("Meterboard queue full (%d events): event %s dropped", self._max_queue, body["event_id"])
            self._tell(Outcome(event_id=body["event_id"], status=DROPPED, event=body,
                               errors={"non_field_errors": ["The client's queue was full."]}))  # fmt: skip
            return None
        self._enqueued += 1
        self._counters.add(queued=1)
        return body["event_id"]

    async def flush(self, timeout: float | None = None) -> bool:
        target = self._enqueued
        self._flush_target = max(self._flush_target, target)
        self._wake()
        async with self._progress:
            try:
                await asyncio.wait_for(self._progress.wait_for(lambda: self._completed >= target), timeout)
            except TimeoutError:
                return False
        return True

    async def close(self, timeout: float | None = None) -> bool:
        if self._closed:
            return True
        self._closed = True
        done = await self.flush(timeout) if self._task is not None else True
        if not done:
            self._abandon.set()
        if self._task is not None and not self._task.done():
            await self._queue.put(_STOP)
            await self._task
        await self._http.aclose()
        return done

    async def __aenter__(self) -> AsyncMeterboard:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def stats(self) -> Stats:
        return self._counters.snapshot()

    async def allowed(self) -> Allowance:
        cached = self._allowance
        if cached is not None and time.monotonic() - cached.checked_at < self._allowance_ttl:
            return cached
        async with self._allowance_lock:
            cached = self._allowance
            if cached is not None and time.monotonic() - cached.checked_at < self._allowance_ttl:
                return cached
            response, error = None, None
            try:
                response = await self._http.get(ALLOWANCE_PATH, timeout=self._allowance_timeout)
            except httpx.TransportError as problem:
                error = problem
            self._allowance = allowance_of(response, error, fail_open=self._fail_open, at=time.monotonic())
            return self._allowance

    async def quote(self, event: Event | str, /, **fields: Any) -> Quote:
        body = body_of(event, fields, for_quote=True)
        for attempt in range(QUOTE_ATTEMPTS):
            response, error = None, None
            try:
                response = await self._http.post(QUOTE_PATH, json=body)
            except httpx.TransportError as problem:
                error = problem
            decision = decide(response, error, per_item=False)
            if response is not None and decision.action != "retry":
                return quote_of(response)
            if attempt + 1 < QUOTE_ATTEMPTS:
                await asyncio.sleep(self._retry.wait(attempt, decision.retry_after))
        raise MeterboardError(f"quote failed after {QUOTE_ATTEMPTS} attempts: {decision.error}", status=decision.status)

    # --- plumbing --------------------------------------------------------------------------------

    def _wake(self) -> None:
        try:
            self._queue.put_nowait(_WAKE)
        except asyncio.QueueFull:
            pass

    async def _run(self) -> None:
        while True:
            batch, stop = await self._collect()
            if batch:
                try:
                    await self._deliver(batch)
                except Exception:
                    logger.exception("Meterboard sender failed on a batch of %d events", len(batch))
                    await self._report(failed(batch, "the client failed to send it (see the log)"))
            if stop:
                return

    async def _collect(self) -> tuple[list[dict], bool]:
        batch: list[dict] = []
        deadline = 0.0
        while len(batch) < self._batch_size:
            urgent = self._flush_target > self._completed or self._abandon.is_set()
            try:
                if not batch:
                    item = await self._queue.get()
                elif urgent:
                    item = self._queue.get_nowait()
                else:
                    item = await asyncio.wait_for(self._queue.get(), max(0.0, deadline - time.monotonic()))
            except (asyncio.QueueEmpty, TimeoutError):
                break
            if item is _STOP:
                return batch, True
            if item is _WAKE:
                continue
            if not batch:
                deadline = time.monotonic() + self._flush_interval
            batch.append(item)
        return batch, False

    async def _deliver(self, batch: list[dict]) -> None:
        parts = [batch]
        while parts:
            part = parts.pop(0)
            outcomes = await self._send(part)
            if outcomes == _SPLIT:
                half = len(part) // 2
                parts[0:0] = [part[:half], part[half:]]
                self._counters.add(splits=1)
                continue
            await self._report(outcomes)

    async def _send(self, part: Sequence[dict]) -> list[Outcome] | str:
        payload = encode(part)
        started, attempt = time.monotonic(), 0
        while True:
            if self._abandon.is_set():
                return failed(part, "The client was closed before the server answered for this event.")
            response, error = None, None
            try:
                response = await self._http.post(EVENTS_PATH, content=payload)
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
            try:
                await asyncio.wait_for(self._abandon.wait(), wait)
                return failed(part, "The client was closed before the server answered for this event.")
            except TimeoutError:
                pass

    async def _report(self, outcomes: list[Outcome]) -> None:
        tally: dict[str, int] = {}
        for outcome in outcomes:
            tally[outcome.status] = tally.get(outcome.status, 0) + 1
            log_outcome(outcome)
            self._tell(outcome)
        self._counters.add(**tally)
        async with self._progress:
            self._completed += len(outcomes)
            self._progress.notify_all()

    def _tell(self, outcome: Outcome) -> None:
        if self._on_result is None:
            return
        try:
            self._on_result(outcome)
        except Exception:
            logger.exception("Meterboard on_result callback failed for %s", outcome.event_id)

"""The Python client's promise (issue 14): every event tracked arrives exactly once, from several
threads, while the server is killed and started again in the middle, and while a proxy in front of
it answers 429 and 503 with Retry-After or drops the connection after the server stored a batch.
Against a live gunicorn on the test database; the database is the judge."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict

import pytest
from django.db.models import Sum
from meterboard import AsyncMeterboard, Generation, Meterboard, RetryPolicy, Upscaling

from tests.clients.conftest import LOSE, THROTTLE, UNAVAILABLE, UPSTREAM_DOWN
from usage.models import DailyRollup, UsageEvent

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TOTAL, THREADS = 100_000, 8
FAST_RETRIES = RetryPolicy(initial=0.05, cap=1.0, max_elapsed=120)


def wait_until(condition, limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {limit:.0f} s: {what}")
        time.sleep(0.02)


class Ledger:
    """Every outcome the client reported, per event_id."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_id: dict[str, list[str]] = defaultdict(list)

    def __call__(self, outcome) -> None:
        with self.lock:
            self.by_id[outcome.event_id].append(outcome.status)


def assert_stored_exactly_once(workspace, ids: list[str]) -> None:
    stored = list(UsageEvent.objects.filter(workspace=workspace).values_list("event_id", flat=True))
    assert len(stored) == len(ids) == len(set(ids))
    assert set(stored) == set(ids)
    rollups = DailyRollup.objects.filter(workspace=workspace).aggregate(events=Sum("events"))
    assert rollups["events"] == len(ids)


def stored_then_lost(front) -> int:
    """Batches the server stored (it answered 200) whose answer the client never saw."""
    return sum(1 for seen in list(front.seen) if seen.what == LOSE and seen.status == 200)


def test_100k_events_from_8_threads_arrive_exactly_once_through_a_restart_429_503_and_lost_answers(
    gunicorn_server, front, key
):
    workspace, issued = key
    ledger = Ledger()
    client = Meterboard(issued.secret, front.url, max_queue=10_000, when_full="block", retry=FAST_RETRIES,
                        on_result=ledger)  # fmt: skip
    ids: list[list[str]] = [[] for _ in range(THREADS)]
    started = time.monotonic()

    def produce(n: int) -> None:
        for i in range(TOTAL // THREADS):
            if i % 4:
                event = Generation(model="sdxl" if i % 3 else "sd15", steps=30 + i % 3 * 20, width=1024, height=1024,
                                   composition_control=i % 5 == 0, metadata={"thread": n})  # fmt: skip
            else:
                event = Upscaling(quantity=1 + i % 3)
            ids[n].append(client.track(event))

    producers = [threading.Thread(target=produce, args=(n,)) for n in range(THREADS)]
    for thread in producers:
        thread.start()

    # The server dies (SIGKILL: requests in flight are cut, transactions rolled back) and comes back.
    wait_until(lambda: client.stats.delivered >= 30_000, 60, "30,000 events delivered")
    gunicorn_server.kill()
    killed = time.monotonic()
    time.sleep(1.0)
    gunicorn_server.start()
    restart_seconds = time.monotonic() - killed

    # Then a proxy in front of it throttles, is unavailable, and loses answers, for a while.
    wait_until(lambda: client.stats.delivered >= 60_000, 60, "60,000 events delivered")
    front.mix = {THROTTLE: 0.2, UNAVAILABLE: 0.2, LOSE: 0.3}
    wait_until(lambda: min(front.count(THROTTLE), front.count(UNAVAILABLE), stored_then_lost(front)) >= 2, 60,
               "two of each fault")  # fmt: skip
    front.mix = {}

    for thread in producers:
        thread.join(timeout=120)
    assert client.close(timeout=120), client.stats
    elapsed = time.monotonic() - started

    every_id = [event_id for thread_ids in ids for event_id in thread_ids]
    stats = client.stats
    print(f"\n100k exactly once: {elapsed:.1f} s (server down {restart_seconds:.1f} s), {stats}, "
          f"front: {front.count(UPSTREAM_DOWN)} cut, {front.count(THROTTLE)} 429, {front.count(UNAVAILABLE)} 503, "
          f"{front.count(LOSE)} answers lost")  # fmt: skip
    assert None not in every_id  # nothing dropped: "block" waited for room
    assert_stored_exactly_once(workspace, every_id)
    # The client agrees, event by event: each reported once, delivered.
    assert stats.queued == TOTAL and stats.accepted + stats.duplicate == TOTAL
    assert (stats.rejected, stats.conflict, stats.failed, stats.dropped) == (0, 0, 0, 0)
    assert len(ledger.by_id) == TOTAL and all(statuses in (["accepted"], ["duplicate"]) for statuses in ledger.by_id.values())
    # The faults happened, and were survived by retrying: batches whose answer was lost were stored,
    # and their retry came back as duplicates.
    assert front.count(UPSTREAM_DOWN) >= 1 and front.count(THROTTLE) >= 1 and front.count(UNAVAILABLE) >= 1
    assert stored_then_lost(front) >= 2 and stats.duplicate >= 1000
    assert stats.retries >= front.count(UPSTREAM_DOWN) + front.count(THROTTLE) + front.count(UNAVAILABLE)


def test_the_asyncio_client_delivers_exactly_once_through_lost_answers_and_503(gunicorn_server, front, key):
    workspace, issued = key
    ledger = Ledger()
    front.mix = {LOSE: 0.3, UNAVAILABLE: 0.2}
    total = 5_000

    async def main() -> list[str | None]:
        async with AsyncMeterboard(issued.secret, front.url, max_queue=1_000, batch_size=250, retry=FAST_RETRIES,
                                   on_result=ledger) as client:  # fmt: skip
            ids = await asyncio.gather(*(track_some(client, n) for n in range(5)))
            assert await client.flush(timeout=60)
            front.mix = {}
            return [event_id for part in ids for event_id in part], client.stats

    async def track_some(client: AsyncMeterboard, n: int) -> list[str | None]:
        return [await client.track("generation", model="sd15", steps=30, width=512, height=512)
                for _ in range(total // 5)]  # fmt: skip

    ids, stats = asyncio.run(main())
    assert None not in ids
    assert_stored_exactly_once(workspace, ids)
    assert stats.accepted + stats.duplicate == total and stats.failed == 0
    assert front.count(LOSE) >= 1 and stats.duplicate >= 1
    assert all(statuses in (["accepted"], ["duplicate"]) for statuses in ledger.by_id.values())


def test_the_asyncio_client_quotes_checks_the_hard_limit_and_drops_when_full(gunicorn_server, front, key):
    from decimal import Decimal

    from bench.server import free_port

    _, issued = key

    async def main():
        async with AsyncMeterboard(issued.secret, front.url) as client:
            quote = await client.quote("upscaling", quantity=2)
            allowance = await client.allowed()
            assert await client.allowed() is allowance  # cached
        async with AsyncMeterboard(issued.secret, f"http://127.0.0.1:{free_port()}", fail_open=False,
                                   max_queue=2, when_full="drop", retry=RetryPolicy(max_elapsed=0.2)) as down:  # fmt: skip
            refused = await down.allowed()
            ids = [await down.track("detection") for _ in range(5)]
        return quote, allowance, refused, ids, down.stats

    quote, allowance, refused, ids, stats = asyncio.run(main())
    assert quote.amount == Decimal("0.060000") and allowance.allowed and allowance.source == "server"
    assert not refused and refused.source == "fail_closed"
    assert ids.count(None) == 3 and stats.dropped == 3  # the sender had not run yet: two fit
    assert stats.failed == 2  # gave up on the down server within max_elapsed

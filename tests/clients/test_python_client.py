"""The Python client's behaviours, each against the live server (behind the test's fault front where
a fault is needed): what is retried and what is not, 413 halving, Retry-After, the queue's
policies, the hard limit's cache and its failure modes, quotes, the typed events, outcomes and
logs, and closing (explicit, `with`, and at interpreter exit)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from meterboard import (
    BackgroundRemoval,
    Captioning,
    Detection,
    EventError,
    Generation,
    MagicPrompt,
    Meterboard,
    MeterboardError,
    Pixelate,
    RetryPolicy,
    Training,
    Upscaling,
)  # fmt: skip

from bench.server import free_port
from budgets.services import budget_create
from tests.clients.conftest import FORWARD, THROTTLE, UNAVAILABLE
from tests.clients.test_python_client_exactly_once import Ledger, wait_until
from usage.models import UsageEvent
from workspaces.services import api_key_create

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
SD15 = dict(model="sd15", steps=30, width=512, height=512)


def stored_ids(workspace) -> set[str]:
    return set(UsageEvent.objects.filter(workspace=workspace).values_list("event_id", flat=True))


@pytest.mark.parametrize("scopes, status", [(None, 401), (["usage:read"], 403)])
def test_a_refused_key_is_not_retried_and_each_event_is_reported_failed(front, key, scopes, status, caplog):
    workspace, issued = key
    secret = "mb_" + "x" * 40 if scopes is None else api_key_create(workspace=workspace, name="ro", scopes=scopes).secret
    ledger = Ledger()
    with Meterboard(secret, front.url, on_result=ledger) as client:
        ids = [client.track("upscaling") for _ in range(3)]
        assert client.flush(timeout=30)
        stats = client.stats
    assert len(front.requests()) == 1  # one request, no retry
    assert (stats.failed, stats.retries, stats.delivered) == (3, 0, 0)
    assert all(ledger.by_id[event_id] == ["failed"] for event_id in ids)
    assert f"{status}:" in caplog.text and "not retried" in caplog.text
    assert stored_ids(workspace) == set()


def test_a_413_halves_the_batch_until_it_fits_and_a_single_event_too_large_fails(front, key):
    workspace, issued = key
    front.max_body = 60_000  # as a proxy's body limit would: 1,000 events are about 200 KB
    ledger = Ledger()
    with Meterboard(issued.secret, front.url, on_result=ledger, flush_interval=5) as client:
        ids = [client.track("generation", metadata={"job": n}, **SD15) for n in range(1_000)]
        assert client.flush(timeout=60)
        big = client.track("training", metadata={"notes": "x" * 3_000})
        front.max_body = 2_000
        assert client.flush(timeout=30)
        stats = client.stats
    assert stored_ids(workspace) == set(ids)
    assert stats.splits >= 3 and stats.accepted == 1_000
    assert {s.status for s in front.requests() if s.what == FORWARD} == {200}
    assert all(s.size <= 60_000 for s in front.requests() if s.what == FORWARD)
    assert ledger.by_id[big] == ["failed"] and stats.failed == 1


def test_retry_after_is_honoured_on_429_and_503(front, key):
    workspace, issued = key
    front.script = [THROTTLE, UNAVAILABLE]
    front.retry_after = "1"
    with Meterboard(issued.secret, front.url, retry=RetryPolicy(initial=0.01, cap=0.05)) as client:
        event_id = client.track("captioning")
        assert client.flush(timeout=30)
        assert client.stats.retries == 2
    attempts = [s.at for s in front.requests()]
    assert len(attempts) == 3
    gaps = [later - earlier for earlier, later in zip(attempts, attempts[1:], strict=False)]
    assert all(1.0 <= gap < 1.6 for gap in gaps), gaps  # the server's wait, not the 50 ms backoff cap
    assert stored_ids(workspace) == {event_id}


def stall_the_sender(front, client) -> None:
    """Hold the sender in a 2-second Retry-After with one event in hand: the queue fills."""
    front.script, front.retry_after = [UNAVAILABLE], "2"
    client.track("pixelate")
    wait_until(lambda: front.count(UNAVAILABLE) == 1, 10, "the sender's first request")


def test_the_drop_policy_drops_counts_and_reports_what_does_not_fit(front, key, caplog):
    workspace, issued = key
    ledger = Ledger()
    with Meterboard(issued.secret, front.url, max_queue=5, when_full="drop", flush_interval=0.05, on_result=ledger) as client:
        stall_the_sender(front, client)
        started = time.monotonic()
        ids = [client.track("pixelate") for _ in range(8)]
        assert time.monotonic() - started < 0.5  # never waits
        kept, dropped = ids[:5], ids[5:]
        assert None not in kept and dropped == [None] * 3
        assert client.flush(timeout=30)
        stats = client.stats
    assert stats.dropped == 3 and stats.accepted == 6
    assert sorted(statuses for statuses in ledger.by_id.values()) == [["accepted"]] * 6 + [["dropped"]] * 3
    assert "queue full" in caplog.text
    assert kept[0] in stored_ids(workspace) and len(stored_ids(workspace)) == 6


def test_the_block_policy_waits_for_room(front, key):
    workspace, issued = key
    with Meterboard(issued.secret, front.url, max_queue=5, when_full="block", flush_interval=0.05) as client:
        stall_the_sender(front, client)
        ids: list = []
        producer = threading.Thread(target=lambda: ids.extend(client.track("detection") for _ in range(6)))
        producer.start()
        time.sleep(0.7)
        assert producer.is_alive() and len(ids) == 5  # five fit; the sixth waits for room
        producer.join(timeout=10)
        assert not producer.is_alive() and None not in ids
        assert client.flush(timeout=30)
        assert client.stats.dropped == 0
    assert len(stored_ids(workspace)) == 7


def test_block_with_a_timeout_drops_after_it(front, key):
    _, issued = key
    with Meterboard(issued.secret, front.url, max_queue=1, block_timeout=0.3, flush_interval=0.05) as client:
        stall_the_sender(front, client)
        assert client.track("detection") is not None
        started = time.monotonic()
        assert client.track("detection") is None
        assert 0.3 <= time.monotonic() - started < 1.0
        assert client.stats.dropped == 1


def test_allowed_is_cached_for_its_ttl_then_sees_the_hard_limit(front, key):
    workspace, issued = key
    budget_create(workspace=workspace, amount=Decimal("5"), thresholds=[100], hard_limit=True)
    with Meterboard(issued.secret, front.url, allowance_ttl=1.5) as client:
        first = client.allowed()
        assert first.allowed and first.source == "server" and first.spend == Decimal("0") and first.budget == Decimal("5")
        client.track(Training())
        client.track(Training())
        assert client.flush(timeout=30)
        assert client.allowed() is first  # cached: no request
        assert front.count(FORWARD, "/api/v1/allowance") == 1
        time.sleep(1.6)
        later = client.allowed()
    assert not later and later.spend == Decimal("10") and later.remaining == Decimal("0")
    assert "hard limit" in later.reason
    assert front.count(FORWARD, "/api/v1/allowance") == 2


@pytest.mark.parametrize("fail_open", [True, False])
def test_allowed_fails_open_or_closed_when_the_server_cannot_answer(front, key, fail_open):
    _, issued = key
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with Meterboard(issued.secret, nobody, fail_open=fail_open, allowance_ttl=5) as client:
        answer = client.allowed()
        assert client.allowed() is answer  # a down server costs one attempt per TTL
    assert answer.allowed is fail_open and answer.source == ("fail_open" if fail_open else "fail_closed")
    assert "ConnectError" in answer.reason
    front.script = [UNAVAILABLE]
    with Meterboard(issued.secret, front.url, fail_open=fail_open) as client:
        answer = client.allowed()
    assert answer.allowed is fail_open and "503" in answer.reason


def test_quote_prices_without_storing_and_reports_field_errors(front, key):
    workspace, issued = key
    with Meterboard(issued.secret, front.url) as client:
        quote = client.quote(Generation(model="sdxl", steps=50, width=1024, height=1824, quantity=10))
        assert (quote.unit_price, quote.amount, quote.quantity, quote.currency) == (
            Decimal("0.169000"), Decimal("1.690000"), 10, "USD")  # fmt: skip
        assert client.quote("upscaling", quantity=2).amount == Decimal("0.060000")
        with pytest.raises(MeterboardError) as refused:  # a rule only the server knows
            client.quote("training", occurred_at=datetime(2023, 6, 1, tzinfo=timezone.utc))
        assert refused.value.status == 400 and "occurred_at" in refused.value.errors
        with pytest.raises(EventError):  # caught before any request
            client.quote("generation", model="sdxl", steps=0, width=1024, height=1024)
    assert stored_ids(workspace) == set()
    assert len(front.requests("/api/v1/quote")) == 3


def test_each_typed_event_is_accepted_at_its_quoted_price(front, key):
    workspace, issued = key
    events = [
        Generation(model="sdxl", steps=50, width=1024, height=1024, composition_control=True, spot=True,
                   metadata={"prompt_id": "p-1"}),
        Generation(model="sd15", steps=30, width=512, height=768, event_id="job-42"),
        BackgroundRemoval(), Detection(quantity=2), Upscaling(quantity=3), Captioning(), MagicPrompt(), Pixelate(),
        Training(occurred_at=datetime.now(timezone.utc) - timedelta(hours=1)),
    ]  # fmt: skip
    ledger = Ledger()
    amounts = {}
    with Meterboard(issued.secret, front.url, on_result=lambda o: (ledger(o), amounts.__setitem__(o.event_id, o.amount))) as client:
        quotes = [client.quote(event).amount for event in events]
        ids = [client.track(event) for event in events]
        assert client.flush(timeout=30)
    assert ids[1] == "job-42"
    assert all(ledger.by_id[event_id] == ["accepted"] for event_id in ids)
    assert [amounts[event_id] for event_id in ids] == quotes
    stored = {e.event_id: e for e in UsageEvent.objects.filter(workspace=workspace)}
    assert {e.feature for e in stored.values()} == {"generation", "background_removal", "detection", "upscaling",
                                                   "captioning", "magic_prompt", "pixelate", "training"}  # fmt: skip
    first = stored[ids[0]]
    assert (first.model, first.steps, first.composition_control, first.spot, first.metadata) == (
        "sdxl", 50, True, True, {"prompt_id": "p-1"})  # fmt: skip


def test_rejected_and_conflicting_events_are_reported_and_logged_with_their_errors(front, key, caplog):
    workspace, issued = key
    ledger = Ledger()
    with Meterboard(issued.secret, front.url, on_result=ledger) as client:
        job = Upscaling(event_id="job-1", occurred_at=datetime.now(timezone.utc))
        client.track(job)
        assert client.flush(timeout=30)
        conflict = client.track(Upscaling(event_id="job-1", occurred_at=job.occurred_at, quantity=2))  # other content
        rejected = client.track("training", occurred_at=datetime(2023, 6, 1, tzinfo=timezone.utc))
        again = client.track(job)  # the caller sends the same event again: a duplicate
        assert client.flush(timeout=30)
        stats = client.stats
    assert ledger.by_id[conflict] == ["accepted", "conflict", "duplicate"] and again == conflict
    assert ledger.by_id[rejected] == ["rejected"]
    assert (stats.accepted, stats.conflict, stats.rejected, stats.duplicate) == (1, 1, 1, 1)
    assert f"event {conflict} conflict" in caplog.text and f"event {rejected} rejected" in caplog.text
    assert "occurred_at" in caplog.text
    assert stored_ids(workspace) == {"job-1"}


def test_a_lone_event_is_sent_within_the_flush_interval_and_closing_sends_the_rest(front, key):
    workspace, issued = key
    client = Meterboard(issued.secret, front.url, flush_interval=1.0)
    started = time.monotonic()
    client.track("magic_prompt")
    wait_until(lambda: client.stats.delivered == 1, 5, "the interval's flush")
    assert 0.9 <= time.monotonic() - started < 2.5  # it waited for company, then sent alone
    with client:
        ids = [client.track("magic_prompt") for _ in range(10)]
    assert len(front.requests()) == 2 and client.stats.delivered == 11
    assert set(ids) <= stored_ids(workspace)
    with pytest.raises(RuntimeError):
        client.track("magic_prompt")


def test_events_tracked_before_the_interpreter_exits_are_sent(front, key, tmp_path):
    """No close(), no flush(): atexit closes the client."""
    workspace, issued = key
    script = textwrap.dedent(f"""
        from meterboard import Meterboard
        client = Meterboard({issued.secret!r}, {front.url!r}, flush_interval=30)
        for n in range(5):
            print(client.track("captioning", event_id=f"exit-{{n}}"))
    """)
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr
    assert stored_ids(workspace) == {f"exit-{n}" for n in range(5)}


def test_a_forked_child_sends_its_own_events_through_a_sender_of_its_own(front, key):
    """A client made before a fork (gunicorn --preload) and used in the child: the child starts its
    own queue, thread and connections; the parent's keep working."""
    workspace, issued = key
    script = textwrap.dedent(f"""
        import os
        from meterboard import Meterboard
        client = Meterboard({issued.secret!r}, {front.url!r}, flush_interval=0.05)
        client.track("captioning", event_id="parent-before")
        assert client.flush(timeout=30)
        child = os.fork()
        if child == 0:
            for n in range(3):
                client.track("captioning", event_id=f"child-{{n}}")
            os._exit(0 if client.close(timeout=30) else 1)
        client.track("captioning", event_id="parent-after")
        assert os.waitpid(child, 0)[1] == 0, "the child did not deliver"
        assert client.close(timeout=30)
    """)
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr
    assert stored_ids(workspace) == {"parent-before", "parent-after", "child-0", "child-1", "child-2"}

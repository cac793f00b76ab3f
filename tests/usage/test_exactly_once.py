"""Exactly once under retries and concurrency, and rollups that always equal the raw ledger.

These run on whichever database the suite runs on: on PostgreSQL the requests really overlap
(the unique index arbitrates); on SQLite writers queue behind one lock. Both must hold.
"""

from __future__ import annotations

import random
import threading
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from tests.conftest import client_with, event
from usage.models import DailyRollup, UsageEvent
from workspaces.services import api_key_create, workspace_create

ADD_ON = dict(model=..., steps=..., width=..., height=...)


def assert_rollups_equal_raw(workspace) -> None:
    """Sum the raw ledger in Python (exact Decimals) and compare with every rollup row."""
    raw: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])
    for e in UsageEvent.objects.filter(workspace=workspace):
        key = (e.occurred_at.date(), e.api_key_id, e.feature, e.model, e.steps or 0, e.width or 0,
               e.height or 0, e.composition_control, e.spot, int(e.unit_price * 1_000_000))
        raw[key][0] += e.quantity
        raw[key][1] += int(e.amount * 1_000_000)
        raw[key][2] += 1
    rollups = {
        (r.day, r.api_key_id, r.feature, r.model, r.steps, r.width, r.height, r.composition_control, r.spot,
         r.unit_price_micros): [r.quantity, r.amount_micros, r.events]
        for r in DailyRollup.objects.filter(workspace=workspace)
    }
    assert rollups == dict(raw)


def random_events(rng: random.Random, n: int, prefix: str) -> list[dict]:
    events = []
    for i in range(n):
        kind = rng.random()
        day = rng.randint(1, 24)
        base = {"event_id": f"{prefix}-{i}", "occurred_at": f"2026-11-{day:02d}T{rng.randint(0, 23):02d}:30:00Z",
                "quantity": rng.randint(1, 4), "spot": rng.random() < 0.1}
        if kind < 0.7:
            model = rng.choice(["sd15", "sdxl"])
            side = 512 if model == "sd15" else 1024
            base.update(feature="generation", model=model, steps=rng.choice([30, 50, 100, 150]), width=side,
                        height=rng.choice([side, side + 128, 2 * side]), composition_control=rng.random() < 0.2)
        else:
            base.update(feature=rng.choice(["upscaling", "background_removal", "captioning", "training"]))
        events.append(base)
    return events


def run_concurrently(calls):
    """Start every call at the same instant on its own thread (and DB connection)."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        try:
            barrier.wait(timeout=10)
            return call()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def test_mixed_batches_with_retries_keep_rollups_equal_to_raw(api, workspace, other_api, other_workspace):
    rng = random.Random(7)
    events = random_events(rng, 600, "mix")
    for start in range(0, 600, 150):
        api.post("/api/v1/events", {"events": events[start : start + 150]}, format="json")
    # Retries of random slices, a few conflicts, some rejects, and another workspace's traffic.
    retry = rng.sample(events, 200) + [dict(events[0], quantity=99), event(steps=0)]
    answer = api.post("/api/v1/events", {"events": retry}, format="json").json()
    assert (answer["accepted"], answer["duplicates"], answer["conflicts"], answer["rejected"]) == (0, 200, 1, 1)
    other_api.post("/api/v1/events", {"events": random_events(rng, 100, "mix")}, format="json")

    assert UsageEvent.objects.filter(workspace=workspace).count() == 600
    assert_rollups_equal_raw(workspace)
    assert_rollups_equal_raw(other_workspace)


@pytest.mark.django_db(transaction=True)
def test_identical_concurrent_requests_store_each_event_once():
    workspace = workspace_create(slug="race", owner_email="race@test.example")
    secret = api_key_create(workspace=workspace, name="racer").secret
    events = random_events(random.Random(1), 300, "race")

    def send(batch):
        return lambda: client_with(secret).post("/api/v1/events", {"events": batch}, format="json").json()

    # Six clients send overlapping batches at the same moment: all of it, halves, and shuffles.
    shuffled = events[:]
    random.Random(2).shuffle(shuffled)
    answers = run_concurrently([send(events), send(events), send(shuffled), send(shuffled[:150]),
                                send(events[150:]), send(events[::-1])])

    accepted = Counter(r["event_id"] for a in answers for r in a["results"] if r["status"] == "accepted")
    assert set(accepted) == {e["event_id"] for e in events}
    assert set(accepted.values()) == {1}, "some event was accepted twice"
    assert all(r["status"] in ("accepted", "duplicate") for a in answers for r in a["results"])
    assert UsageEvent.objects.filter(workspace=workspace).count() == 300
    assert_rollups_equal_raw(workspace)


@pytest.mark.django_db(transaction=True)
def test_the_same_single_event_sent_by_many_clients_at_once_is_accepted_once():
    workspace = workspace_create(slug="burst", owner_email="burst@test.example")
    secret = api_key_create(workspace=workspace, name="burst").secret
    body = event(event_id="only-once", model="sdxl", width=1024, height=1024, quantity=3)
    answers = run_concurrently(
        [lambda: client_with(secret).post("/api/v1/events", body, format="json").json() for _ in range(8)]
    )
    statuses = Counter(a["results"][0]["status"] for a in answers)
    assert statuses == {"accepted": 1, "duplicate": 7}
    assert {a["results"][0]["amount"] for a in answers} == {"0.096000"}
    rollup = DailyRollup.objects.get(workspace=workspace)
    assert (rollup.quantity, rollup.amount_micros, rollup.events) == (3, 96_000, 1)


@pytest.mark.django_db(transaction=True)
def test_concurrent_different_content_for_one_event_id_stores_exactly_one_version():
    workspace = workspace_create(slug="clash", owner_email="clash@test.example")
    secret = api_key_create(workspace=workspace, name="clash").secret
    versions = [event(event_id="clash-1", quantity=q, feature="captioning", **ADD_ON) for q in (1, 2, 3, 4)]
    answers = run_concurrently(
        [lambda b=b: client_with(secret).post("/api/v1/events", b, format="json").json() for b in versions]
    )
    statuses = Counter(a["results"][0]["status"] for a in answers)
    assert statuses == {"accepted": 1, "conflict": 3}
    winner = next(v for v, a in zip(versions, answers, strict=True) if a["results"][0]["status"] == "accepted")
    assert UsageEvent.objects.get(workspace=workspace).quantity == winner["quantity"]
    assert_rollups_equal_raw(workspace)


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_of_different_workspaces_and_days_do_not_deadlock():
    """Batches touching many shared rollup rows in opposite orders all land."""
    clients = []
    for n in range(4):
        ws = workspace_create(slug=f"dl-{n}", owner_email=f"dl{n}@test.example")
        clients.append((ws, client_with(api_key_create(workspace=ws, name="k").secret)))
    calls = []
    for _, client in clients:
        for part in range(2):
            batch = random_events(random.Random(part), 250, f"p{part}")
            if part:
                batch.reverse()
            calls.append(lambda c=client, b=batch: c.post("/api/v1/events", {"events": b}, format="json").status_code)
    assert run_concurrently(calls) == [200] * 8
    for ws, _ in clients:
        assert_rollups_equal_raw(ws)


@pytest.mark.django_db(transaction=True)
def test_single_events_through_the_served_application_are_stored_once_and_counted_once():
    """The path gunicorn serves since issue 12 (config.wsgi's machine-call chain, the prepared
    statement, references locked once, the counters' one step after the commit): eight clients
    send the same event at once and eight send events of their own; one of the first is accepted,
    every own event is, the rollups equal the ledger, and a month-to-date counter built before the
    burst ends equal to the database's sum."""
    from django.utils import timezone

    from budgets import counters
    from config.wsgi import application
    from core.periods import current_period
    from tests.conftest import wsgi_call

    workspace = workspace_create(slug="served", owner_email="served@test.example")
    issued = api_key_create(workspace=workspace, name="served")
    now = timezone.now().replace(microsecond=0).isoformat()
    period = current_period(timezone.now())
    counters.month_to_date(workspace.pk, issued.api_key.pk, period)  # built now, moved by the burst

    def send(body):
        return lambda: wsgi_call(application, "POST", "/api/v1/events", secret=issued.secret, body=body)

    same = event(event_id="served-once", occurred_at=now, model="sdxl", width=1024, height=1024)
    own = [event(event_id=f"served-{n}", occurred_at=now) for n in range(8)]
    answers = run_concurrently([send(same) for _ in range(8)] + [send(body) for body in own])
    assert [status for status, _, _ in answers] == [200] * 16
    statuses = Counter(body["results"][0]["status"] for _, body, _ in answers[:8])
    assert statuses == {"accepted": 1, "duplicate": 7}
    assert {body["results"][0]["status"] for _, body, _ in answers[8:]} == {"accepted"}
    assert UsageEvent.objects.filter(workspace=workspace).count() == 9
    assert_rollups_equal_raw(workspace)
    expected = counters._database_sums(workspace.pk, issued.api_key.pk, period)
    assert expected[0] > 0
    assert counters.month_to_date(workspace.pk, issued.api_key.pk, period) == expected

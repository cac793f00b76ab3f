"""Calls per key are counted a few at a time by each process (workspaces.throttling.Reservations,
issue 12): exact for limits under 2,000 a window, never more calls than the limit, and far fewer
round trips to the counter when a key is busy. Two Reservations objects stand for two processes
sharing one counter (Redis under `make test`, the local cache otherwise)."""

from __future__ import annotations

import random

import pytest

from workspaces import throttling
from workspaces.throttling import Reservations

pytestmark = pytest.mark.django_db


@pytest.fixture
def round_trips(monkeypatch):
    counted = []
    real = throttling._incr

    def counting(key, amount, ttl):
        counted.append(amount)
        return real(key, amount, ttl)

    monkeypatch.setattr(throttling, "_incr", counting)
    return counted


def allowed(process: Reservations, limit: int, ident: str = "key:1") -> bool:
    return process.hit("test", ident, limit, 60) is None


def test_a_small_limit_is_counted_call_by_call_across_processes(round_trips):
    first, second = Reservations(), Reservations()
    answers = [allowed(process, 5) for process in (first, second, first, second, first, second, first)]
    assert answers == [True] * 5 + [False] * 2
    assert round_trips == [1] * 7  # nothing held back: exact


def test_a_busy_key_costs_a_few_round_trips_not_one_per_call(round_trips):
    process = Reservations()
    assert all(allowed(process, 60_000) for _ in range(1_000))
    assert len(round_trips) <= 1_000 // 60 + 8, len(round_trips)  # 1, 2, 4 … 60, then 60 at a time
    assert sum(round_trips) - 1_000 < 60  # counted ahead by less than one reservation


def test_never_more_calls_than_the_limit_and_at_most_a_reservation_short_per_process(round_trips):
    limit = 4_000  # reservations of up to 4
    processes = [Reservations() for _ in range(3)]
    rng = random.Random(12)
    passed = sum(allowed(rng.choice(processes), limit) for _ in range(limit + 500))
    assert limit - 3 * 3 <= passed <= limit


def test_tokens_of_a_past_window_are_not_spent_in_the_next(monkeypatch, round_trips):
    clock = [1_000_020.0]
    monkeypatch.setattr(throttling.time, "time", lambda: clock[0])
    process = Reservations()
    for _ in range(40):
        assert allowed(process, 60_000)
    trips = len(round_trips)
    clock[0] += 60  # the next window
    assert allowed(process, 60_000)
    assert len(round_trips) == trips + 1 and round_trips[-1] == 1  # counted afresh, from 1

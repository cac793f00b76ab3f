"""Retention of the event stream (notifications.retention): events past EVENT_RETENTION_DAYS go with
their deliveries and attempts, in batches, unless a delivery is still in flight; two runs at once
share the work; the events log answers a cursor that retention deleted; a replay of a deleted
event is refused. Whether a key forgotten with its event can be published again: see
tests/notifications/test_producers.py."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from django.db import connection

import notifications
from notifications import retention
from notifications.models import Endpoint, Event, EventDelivery, EventDeliveryAttempt
from notifications.services import EventGone, event_id_new, event_id_time, event_replay
from notifications.tasks import events_prune
from tests.conftest import on_postgres

NOW = datetime(2026, 12, 20, 12, tzinfo=timezone.utc)


def hook(workspace, url="https://hooks.example.com/") -> Endpoint:
    return Endpoint.objects.create(workspace=workspace, url=url, secret="whsec_x", event_types=["*"])


def published(workspace, key: str, *, days_ago: float, status: str | None = None, attempts: int = 0) -> Event:
    """An event created `days_ago` before NOW; its deliveries (to every endpoint) set to `status`,
    each with `attempts` attempts logged."""
    event = notifications.publish(workspace.pk, "payment.failed", {"statement_id": 1}, key=key,
                                  created=NOW - timedelta(days=days_ago))  # fmt: skip
    deliveries = EventDelivery.objects.filter(event=event)
    if status:
        deliveries.update(status=status, attempts=attempts)
    for item in deliveries:
        for number in range(1, attempts + 1):
            EventDeliveryAttempt.objects.create(delivery=item, number=number, started_at=NOW, outcome="ok")
    return event


def kept() -> set[str]:
    return set(Event.objects.values_list("pk", flat=True))


def test_old_settled_events_go_with_their_deliveries_and_attempts_and_the_rest_stay(
    workspace, other_workspace
):
    hook(workspace)
    hook(other_workspace)
    delivered = published(workspace, "delivered", days_ago=31, status="delivered", attempts=2)
    gave_up = published(workspace, "gave-up", days_ago=45, status="failed", attempts=3)
    theirs = published(other_workspace, "theirs", days_ago=400, status="delivered", attempts=1)
    pending = published(workspace, "pending", days_ago=40)  # never attempted (e.g. a paused endpoint)
    retrying = published(workspace, "retrying", days_ago=40, status="retrying", attempts=1)
    recent = published(workspace, "recent", days_ago=29, status="delivered", attempts=1)
    Endpoint.objects.filter(workspace=workspace).update(active=False)
    unsent = published(workspace, "unsent", days_ago=31)  # published with no active endpoint: no delivery

    pruned = retention.events_prune(now=NOW)

    assert kept() == {pending.pk, retrying.pk, recent.pk}
    assert (pruned.events, pruned.deliveries, pruned.attempts, pruned.batches) == (4, 3, 6, 1)
    assert not EventDelivery.objects.filter(
        event_id__in=[delivered.pk, gave_up.pk, theirs.pk, unsent.pk]
    ).exists()
    assert EventDeliveryAttempt.objects.count() == 2  # the retrying one's and the recent one's
    # Idempotent: nothing more to do, until the delivery in flight settles.
    assert retention.events_prune(now=NOW) == retention.Pruned()
    EventDelivery.objects.filter(event=retrying).update(status="delivered")
    assert retention.events_prune(now=NOW).events == 1
    assert kept() == {pending.pk, recent.pk}


def test_a_replay_in_flight_keeps_its_event(workspace):
    endpoint = hook(workspace)
    event = published(workspace, "old", days_ago=60, status="delivered", attempts=1)
    replay = event_replay(event, endpoint, now=NOW)
    assert retention.events_prune(now=NOW).events == 0
    EventDelivery.objects.filter(pk=replay.pk).update(status="failed")
    assert retention.events_prune(now=NOW).events == 1 and not kept()


def test_the_retention_is_the_setting_and_never_under_7_days(workspace, settings):
    settings.EVENT_RETENTION_DAYS = 10
    old, young = published(workspace, "12", days_ago=12), published(workspace, "8", days_ago=8)
    assert retention.events_prune(now=NOW).events == 1 and kept() == {young.pk}
    assert old.pk not in kept()
    settings.EVENT_RETENTION_DAYS = 1  # below the floor: 7 days still hold
    six = published(workspace, "6", days_ago=6)
    assert retention.retention_days() == 7
    assert retention.events_prune(now=NOW).events == 1 and kept() == {six.pk}


def test_a_backlog_goes_in_bounded_batches(workspace):
    hook(workspace)
    for n in range(7):
        published(workspace, str(n), days_ago=31 + n, status="delivered", attempts=1)
    published(workspace, "in-flight", days_ago=50)  # the oldest, skipped by every batch
    pruned = retention.events_prune(now=NOW, batch=3)
    assert (pruned.events, pruned.deliveries, pruned.attempts, pruned.batches) == (7, 7, 7, 3)
    assert Event.objects.count() == 1


def test_the_daily_job_is_scheduled_and_answers_its_counts(workspace):
    from config.schedule import CELERY_BEAT_SCHEDULE

    job = CELERY_BEAT_SCHEDULE["notifications-events-prune"]
    assert job["task"] == "notifications.tasks.events_prune"
    assert (job["schedule"].hour, job["schedule"].minute) == ({3}, {50})
    published(workspace, "old", days_ago=400)
    assert events_prune.apply().get() == {"events": 1, "deliveries": 0, "attempts": 0, "batches": 1}


@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_share_the_work_and_delete_each_event_once(workspace):
    if not on_postgres():
        pytest.skip("row locks: SQLite serialises whole transactions")
    hook(workspace)
    hook(workspace, "https://b.example.com/")
    for n in range(60):
        published(workspace, str(n), days_ago=31, status="delivered", attempts=1)
    start, results, errors = threading.Barrier(2), [], []

    def run():
        try:
            start.wait()
            results.append(retention.events_prune(now=NOW, batch=5))
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert sum(r.events for r in results) == 60 and sum(r.deliveries for r in results) == 120
    assert sum(r.attempts for r in results) == 120
    assert not Event.objects.exists() and not EventDeliveryAttempt.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_run_skips_an_event_a_replay_is_locking_and_the_replay_keeps_it(workspace):
    """The replay holds its event's row until its delivery commits: retention skips the row (and
    takes the others), and the event, now with a delivery in flight, stays."""
    if not on_postgres():
        pytest.skip("row locks: SQLite serialises whole transactions")
    from django.db import transaction

    endpoint = hook(workspace)
    locked = published(workspace, "locked", days_ago=60, status="delivered", attempts=1)
    other = published(workspace, "other", days_ago=60, status="delivered", attempts=1)
    with transaction.atomic():
        replay = event_replay(locked, endpoint, now=NOW)  # its row stays locked until this commits
        done = []
        thread = threading.Thread(
            target=lambda: (done.append(retention.events_prune(now=NOW)), connection.close())
        )
        thread.start()
        thread.join(30)
        assert done and done[0].events == 1  # `other`; never waited for the lock
    assert kept() == {locked.pk} and EventDelivery.objects.get(pk=replay.pk).status == "pending"
    assert other.pk not in kept()


def test_a_replay_of_an_event_deleted_meanwhile_is_refused(workspace):
    endpoint = hook(workspace)
    event = published(workspace, "old", days_ago=60, status="delivered", attempts=1)
    retention.events_prune(now=NOW)
    with pytest.raises(EventGone):
        event_replay(event, endpoint, now=NOW)
    assert not EventDelivery.objects.exists()


def test_an_event_id_tells_its_time_and_whether_it_is_past_the_retention():
    created = datetime(2026, 11, 1, 0, 5, 0, 123000, tzinfo=timezone.utc)
    assert event_id_time(event_id_new(created)) == created
    assert event_id_time("evt_" + "U" * 26) is None  # not Crockford base 32: no id of ours
    assert event_id_time("evt_" + "Z" * 26) is None  # past year 9999
    assert retention.is_past_retention(event_id_new(NOW - timedelta(days=31)), now=NOW)
    assert not retention.is_past_retention(event_id_new(NOW - timedelta(days=29)), now=NOW)


def test_the_events_log_says_when_its_cursor_was_deleted_by_retention(api, workspace, other_workspace):
    now = datetime.now(timezone.utc)
    old = notifications.publish(
        workspace.pk, "payment.failed", {}, key="old", created=now - timedelta(days=40)
    )
    new = notifications.publish(
        workspace.pk, "payment.failed", {}, key="new", created=now - timedelta(days=1)
    )
    first = api.get("/api/v1/events-log?limit=1").json()
    assert first["next_after"] == old.pk
    retention.events_prune()
    answer = api.get(f"/api/v1/events-log?after={old.pk}")
    assert answer.status_code == 400
    assert answer.json() == {
        "after": ["This event is older than the 30-day retention; start again without after."]
    }
    assert [e["id"] for e in api.get("/api/v1/events-log").json()["data"]] == [new.pk]  # starting again
    # A recent id that is none of the workspace's events is still just unknown (whoever's it is).
    theirs = notifications.publish(other_workspace.pk, "payment.failed", {}, key="t")
    assert api.get(f"/api/v1/events-log?after={theirs.pk}").json() == {
        "after": ["No such event in this workspace."]
    }

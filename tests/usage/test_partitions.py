"""Monthly partitions of the events, exactly-once across them, and the archive (issue 13).

On PostgreSQL the events live in one partition per month of arrival; these tests check where rows
land (with the real clock too), that the same event id is stored once whichever months its copies
arrive in (also concurrently), that the partitions are made ahead and rows without one are moved
in, that the close and the pages read only the months they need (EXPLAIN of the very queries they
ran), and that `archive_usage` exports a closed month whole, removes it, keeps the rollups and the
statements, and refuses what would lose money. The exactly-once and archive tests run on SQLite
too, where the table is one.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import threading
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone as dj_timezone

from billing.close import period_close
from billing.errors import CloseRefused
from billing.models import Statement, StatementLine
from billing.reissue import statement_void_and_reissue
from billing.retention import month_archive
from dashboard.selectors.usage import events_page
from tests.conftest import event, on_postgres
from tests.usage.test_exactly_once import run_concurrently
from usage import partitions, receipts
from usage.models import ArchivedMonth, DailyRollup, EventReceipt, UsageEvent
from usage.services import events_ingest
from usage.tasks import ledger_maintain
from workspaces.services import api_key_create, workspace_create

UTC = timezone.utc
AUG, SEP, OCT, NOV = date(2026, 8, 1), date(2026, 9, 1), date(2026, 10, 1), date(2026, 11, 1)
IN_OCT = datetime(2026, 10, 20, 12, 0, tzinfo=UTC)
CLOSE_OCT = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)
USAGE_LINES = (StatementLine.Kind.USAGE, StatementLine.Kind.LATE_USAGE)


def at(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def send(workspace, api_key, bodies, now):
    return [r.status for r in events_ingest(workspace=workspace, api_key=api_key, raw_events=bodies, now=now).results]


def where_rows_are() -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text, count(*) FROM usage_usageevent GROUP BY 1")
        return dict(cursor.fetchall())


def needs_postgres():
    if not on_postgres():
        pytest.skip("partitions are PostgreSQL's; SQLite keeps one table (the tests without this run there too)")


def scanned(sql: str) -> set[str]:
    """The events partitions a query's plan reads (EXPLAIN, not run)."""
    return set(partitions.partitions_in_plan(sql))


def partitions_read(queries) -> set[str]:
    read: set[str] = set()
    for query in queries:
        sql = query["sql"]
        if "usage_usageevent" in sql and sql.lstrip().upper().startswith("SELECT"):
            read |= scanned(sql)
    return read


# --- Where rows land ------------------------------------------------------------------------------


def test_events_land_in_the_partition_of_the_month_they_arrive_in_by_the_real_clock(api, workspace):
    needs_postgres()
    now = dj_timezone.now()
    this_month = date(now.year, now.month, 1)
    made = set(partitions.partitions())
    assert {this_month, partitions.next_month(this_month), partitions.next_month(partitions.next_month(this_month))} <= made
    body = event(occurred_at=at(now - timedelta(days=40)))  # occurred two months back, arrives now
    assert api.post("/api/v1/events", body, format="json").json()["results"][0]["status"] == "accepted"
    assert where_rows_are() == {partitions.name_of(this_month): 1}


def test_the_daily_job_makes_partitions_ahead_and_moves_in_rows_that_had_none(workspace, api_key):
    needs_postgres()
    old = datetime(2024, 3, 10, tzinfo=UTC)
    assert send(workspace, api_key, [event(occurred_at=at(old))], now=old) == ["accepted"]
    assert where_rows_are() == {partitions.DEFAULT: 1}  # no partition for March 2024 yet
    result = ledger_maintain()
    assert "2024-03" in result["partitions_made"]
    assert where_rows_are() == {"usage_usageevent_2024_03": 1}
    assert ledger_maintain()["partitions_made"] == []  # idempotent
    assert UsageEvent.objects.filter(workspace=workspace).count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_nodes_making_partitions_at_once_make_each_once():
    needs_postgres()
    months = [date(2023, m, 1) for m in range(1, 7)]
    results = run_concurrently([lambda: partitions.ensure(extra=months) for _ in range(4)])
    made = [month for result in results for month in result]
    assert sorted(made) == months, "each month made by exactly one caller, none failed"
    assert set(months) <= set(partitions.partitions())


# --- Exactly once across months ---------------------------------------------------------------


def test_an_event_id_is_stored_once_whichever_months_its_copies_arrive_in(workspace, api_key):
    partitions.ensure(extra=[OCT, NOV])
    body = event(event_id="evt-across", occurred_at="2026-10-31T23:50:00Z", model="sdxl", width=1024, height=1024)
    assert send(workspace, api_key, [body], now=datetime(2026, 10, 31, 23, 55, tzinfo=UTC)) == ["accepted"]
    # The client's retry arrives after midnight, in November's partition: a duplicate.
    assert send(workspace, api_key, [body], now=datetime(2026, 11, 1, 0, 5, tzinfo=UTC)) == ["duplicate"]
    assert send(workspace, api_key, [{**body, "quantity": 2}], now=datetime(2026, 12, 3, tzinfo=UTC)) == ["conflict"]
    assert UsageEvent.objects.filter(workspace=workspace, event_id="evt-across").count() == 1
    assert EventReceipt.objects.get(workspace=workspace, event_id="evt-across").amount == Decimal("0.032")
    assert sum(r.events for r in DailyRollup.objects.filter(workspace=workspace)) == 1


@pytest.mark.django_db(transaction=True)
def test_copies_of_one_event_arriving_in_different_months_at_once_are_accepted_once():
    workspace = workspace_create(slug="split", owner_email="split@test.example")
    api_key = api_key_create(workspace=workspace, name="k").api_key
    partitions.ensure(extra=[SEP, OCT, NOV])
    bodies = [event(event_id=f"evt-{n}", occurred_at="2026-09-30T23:58:00Z") for n in range(200)]
    arrivals = [datetime(2026, 9, 30, 23, 59, tzinfo=UTC), datetime(2026, 10, 1, 0, 1, tzinfo=UTC),
                datetime(2026, 11, 1, 0, 1, tzinfo=UTC)] * 2  # fmt: skip
    answers = run_concurrently(
        [lambda now=now, n=n: send(workspace, api_key, bodies[n % 2 :: 1], now) for n, now in enumerate(arrivals)]
    )
    accepted = sum(status == "accepted" for statuses in answers for status in statuses)
    assert accepted == 200
    assert all(status in ("accepted", "duplicate") for statuses in answers for status in statuses)
    assert UsageEvent.objects.filter(workspace=workspace).count() == 200
    assert EventReceipt.objects.filter(workspace=workspace).count() == 200


def test_receipts_are_kept_for_the_window_and_no_less_than_400_days(workspace, api_key, settings):
    settings.EVENT_RECEIPT_DAYS = 10  # below the floor: 400 days still hold
    now = dj_timezone.now()
    old, recent = now - timedelta(days=401), now - timedelta(days=399)
    old_body, recent_body = event(occurred_at=at(old)), event(occurred_at=at(recent))
    assert send(workspace, api_key, [old_body], now=old) == ["accepted"]
    assert send(workspace, api_key, [recent_body], now=recent) == ["accepted"]
    assert receipts.prune() == 1
    assert list(EventReceipt.objects.values_list("event_id", flat=True)) == [recent_body["event_id"]]
    assert send(workspace, api_key, [recent_body], now=now) == ["duplicate"]
    # Past the window an id is forgotten, as documented: sent again, it is a new event.
    assert send(workspace, api_key, [old_body], now=now) == ["accepted"]


# --- Reading only the months needed -------------------------------------------------------------


@pytest.fixture
def three_months(workspace, api_key):
    """Events arriving in August to November; September closed."""
    partitions.ensure(extra=[AUG, SEP, OCT, NOV])
    for month_day in (datetime(2026, 8, 10, tzinfo=UTC), datetime(2026, 9, 10, tzinfo=UTC), IN_OCT,
                      datetime(2026, 11, 1, 0, 30, tzinfo=UTC)):  # fmt: skip
        assert send(workspace, api_key, [event(occurred_at=at(month_day - timedelta(minutes=1)))], now=month_day) == ["accepted"]
    # Late: occurred in August, arrived in October (billed by October's statement).
    assert send(workspace, api_key, [event(occurred_at="2026-08-20T00:00:00Z")], now=IN_OCT) == ["accepted"]
    period_close(AUG, now=datetime(2026, 9, 2, 2, 0, tzinfo=UTC))
    period_close(SEP, now=datetime(2026, 10, 2, 2, 0, tzinfo=UTC))


def test_the_close_of_a_month_reads_only_its_own_and_the_next_months_partitions(three_months, workspace):
    needs_postgres()
    with CaptureQueriesContext(connection) as queries:
        report = period_close(OCT, now=CLOSE_OCT)
    assert report.created == 1
    read = partitions_read(queries.captured_queries)
    # The month's own, the next one's up to the cutoff, September's last five minutes (an event may
    # be stamped up to 5 minutes ahead of its arrival): never August, nor the months ahead.
    assert read <= {"usage_usageevent_2026_09", "usage_usageevent_2026_10", "usage_usageevent_2026_11"}, read
    assert "usage_usageevent_2026_10" in read
    statement = Statement.objects.get(workspace=workspace, period=OCT)
    billed = statement.lines.filter(kind__in=USAGE_LINES)
    assert sum(line.quantity for line in billed) == 2, "October's event and the late August one, nothing else"


def test_the_events_page_skips_the_months_before_its_range(three_months, workspace):
    needs_postgres()
    filters = {"start": date(2026, 10, 5), "end": date(2026, 10, 25)}
    with CaptureQueriesContext(connection) as queries:
        page = events_page(workspace, filters)
    assert len(page.events) == 1
    read = partitions_read(queries.captured_queries)
    assert not read & {"usage_usageevent_2026_08", "usage_usageevent_2026_09"}, read
    assert "usage_usageevent_2026_10" in read


# --- The archive ----------------------------------------------------------------------------------


def _archivable(workspace, api_key) -> dict[str, tuple]:
    """October: three events (one with awkward metadata), one arriving in November for October,
    one November event; October closed. Returns October's arrivals as stored."""
    partitions.ensure(extra=[SEP, OCT, NOV])
    awkward = {"prompt": 'a "quoted", comma\nline', "naïve": "café", "nested": {"k": [1, None, True]}}
    october = [event(occurred_at="2026-10-03T00:00:00Z", metadata=awkward), event(occurred_at="2026-10-19T10:00:00Z"),
               event(occurred_at="2026-10-20T11:00:00Z", model="sdxl", width=1024, height=1024, quantity=3)]  # fmt: skip
    assert send(workspace, api_key, october, now=IN_OCT) == ["accepted"] * 3
    late = event(occurred_at="2026-10-31T23:59:00Z")
    assert send(workspace, api_key, [late], now=datetime(2026, 11, 1, 0, 10, tzinfo=UTC)) == ["accepted"]
    assert send(workspace, api_key, [event(occurred_at="2026-11-01T01:00:00Z")], now=datetime(2026, 11, 1, 1, 0, 1, tzinfo=UTC)) == ["accepted"]
    period_close(OCT, now=CLOSE_OCT)
    return {
        e.event_id: (e.occurred_at, e.amount, e.metadata, e.quantity)
        for e in UsageEvent.objects.filter(received_at__lt=datetime(2026, 11, 1, tzinfo=UTC))
    }


def _read_archive(path) -> dict[str, tuple]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as text:
        rows = list(csv.DictReader(text))
    return {
        row["event_id"]: (datetime.fromisoformat(row["occurred_at"]), Decimal(row["amount"]), json.loads(row["metadata"]),
                          int(row["quantity"]))  # fmt: skip
        for row in rows
    }


def test_archive_exports_a_closed_month_whole_and_removes_it_keeping_rollups_and_statements(
    workspace, api_key, tmp_path, admin_client
):
    stored = _archivable(workspace, api_key)
    rollups = sorted(DailyRollup.objects.values_list("day", "quantity", "amount_micros", "events"))
    statement = Statement.objects.get(workspace=workspace, period=OCT)
    lines = sorted(statement.lines.values_list("kind", "description", "quantity", "amount"))
    record = month_archive(OCT, directory=tmp_path, now=datetime(2026, 11, 5, tzinfo=UTC))

    path = tmp_path / "usage-events-2026-10.csv.gz"
    assert (record.rows, record.path, record.month) == (3, str(path), OCT)
    assert record.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    listed = admin_client.get("/admin/usage/archivedmonth/").content.decode()
    assert record.sha256 in listed and str(path) in listed  # staff find the file and its checksum
    assert _read_archive(path) == stored, "every row, every value, as stored"
    assert not UsageEvent.objects.filter(received_at__lt=datetime(2026, 11, 1, tzinfo=UTC)).exists()
    assert UsageEvent.objects.count() == 2, "November's arrivals stay (one of them billed in October)"
    if on_postgres():
        assert OCT not in partitions.partitions() and NOV in partitions.partitions()
    assert sorted(DailyRollup.objects.values_list("day", "quantity", "amount_micros", "events")) == rollups
    assert sorted(statement.lines.values_list("kind", "description", "quantity", "amount")) == lines
    assert sum(quantity for kind, _, quantity, _ in lines if kind in USAGE_LINES) == 1 + 1 + 3 + 1, "October's, the late one"
    # An archived event sent again is still known: its receipt stays.
    again = next(iter(stored))
    body = event(event_id=again, occurred_at="2026-10-03T00:00:00Z")
    assert send(workspace, api_key, [body], now=datetime(2026, 11, 6, tzinfo=UTC)) in (["duplicate"], ["conflict"])
    assert UsageEvent.objects.filter(event_id=again).count() == 0


def test_an_archive_loads_back_with_copy(workspace, api_key, tmp_path):
    needs_postgres()
    stored = _archivable(workspace, api_key)
    record = month_archive(OCT, directory=tmp_path, now=datetime(2026, 11, 5, tzinfo=UTC))
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE restored (LIKE usage_usageevent)")
        columns = ", ".join(field.column for field in UsageEvent._meta.concrete_fields)
        with cursor.cursor.copy(f"COPY restored ({columns}) FROM STDIN WITH (FORMAT csv, HEADER)") as copy:
            copy.write(gzip.decompress(open(record.path, "rb").read()))
        cursor.execute("SELECT event_id, occurred_at, amount, metadata, quantity FROM restored")
        restored = {row[0]: (row[1], row[2], row[3] if isinstance(row[3], dict) else json.loads(row[3]), row[4])
                    for row in cursor.fetchall()}  # fmt: skip
    assert restored == stored


def test_archive_refuses_a_month_not_over_one_not_billed_and_one_archived_and_removes_nothing(
    workspace, api_key, tmp_path
):
    now = dj_timezone.now()
    with pytest.raises(partitions.ArchiveRefused, match="not over"):
        month_archive(date(now.year, now.month, 1), directory=tmp_path)
    partitions.ensure(extra=[SEP])
    assert send(workspace, api_key, [event(occurred_at="2026-09-10T00:00:00Z")], now=datetime(2026, 9, 10, 0, 1, tzinfo=UTC)) == ["accepted"]
    with pytest.raises(partitions.ArchiveRefused, match=rf"workspace {workspace.pk} \(1 events\).*close_period"):
        month_archive(SEP, directory=tmp_path, now=datetime(2026, 10, 5, tzinfo=UTC))
    assert UsageEvent.objects.count() == 1 and not list(tmp_path.iterdir())
    period_close(SEP, now=datetime(2026, 10, 2, 2, 0, tzinfo=UTC))
    month_archive(SEP, directory=tmp_path, now=datetime(2026, 10, 5, tzinfo=UTC))
    with pytest.raises(partitions.ArchiveRefused, match="archived already"):
        month_archive(SEP, directory=tmp_path, now=datetime(2026, 10, 5, tzinfo=UTC))


def test_an_export_that_fails_removes_nothing(workspace, api_key, tmp_path):
    _archivable(workspace, api_key)
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    with pytest.raises(OSError):
        month_archive(OCT, directory=blocked, now=datetime(2026, 11, 5, tzinfo=UTC))
    assert UsageEvent.objects.count() == 5 and not ArchivedMonth.objects.exists()


def test_a_statement_whose_events_are_archived_cannot_be_reissued(workspace, api_key, tmp_path):
    _archivable(workspace, api_key)
    month_archive(OCT, directory=tmp_path, now=datetime(2026, 11, 5, tzinfo=UTC))
    statement = Statement.objects.get(workspace=workspace, period=OCT)
    with pytest.raises(CloseRefused, match="2026-10, archived.*balance adjustment"):
        statement_void_and_reissue(statement, actor="staff", reason="test", now=datetime(2026, 11, 6, tzinfo=UTC))
    statement.refresh_from_db()
    assert statement.status == Statement.Status.FINALIZED


def test_the_archive_command_reports_what_it_did_and_says_what_to_do_when_refused(workspace, api_key, tmp_path):
    _archivable(workspace, api_key)
    out, err = io.StringIO(), io.StringIO()
    call_command("archive_usage", "2026-10", "--dir", str(tmp_path), stdout=out, stderr=err)
    assert "Archived 3 events of 2026-10" in out.getvalue() and "exporting 2026-10: 3/3 events" in err.getvalue()
    with pytest.raises(CommandError, match="Not a month"):
        call_command("archive_usage", "October")
    with pytest.raises(CommandError, match="not over"):
        call_command("archive_usage", "2999-01", "--dir", str(tmp_path))


@pytest.mark.django_db(transaction=True)
def test_making_a_partition_behind_a_long_read_gives_up_and_never_stalls_ingestion(monkeypatch):
    """A partition is attached, not created `PARTITION OF` (which locks the events table ACCESS
    EXCLUSIVE and queues every insert behind a long read): ingestion goes on, and the upkeep gives
    up after LOCK_TIMEOUT_SECONDS instead of waiting, to succeed on its next run."""
    needs_postgres()
    monkeypatch.setattr(partitions, "LOCK_TIMEOUT_SECONDS", 2)
    workspace = workspace_create(slug="long-read", owner_email="long@test.example")
    api_key = api_key_create(workspace=workspace, name="k").api_key
    reading, finish, outcome = threading.Event(), threading.Event(), {}

    def long_read():
        try:
            with transaction.atomic():
                UsageEvent.objects.count()  # holds every partition, DEFAULT included, until the end
                reading.set()
                finish.wait(15)
        finally:
            connection.close()

    def upkeep():
        started = time.monotonic()
        try:
            partitions.ensure(extra=[date(2022, 1, 1)])
            outcome["made"] = True
        except OperationalError as exc:
            outcome["refused"] = exc
        finally:
            outcome["seconds"] = time.monotonic() - started
            connection.close()

    reader = threading.Thread(target=long_read)
    reader.start()
    assert reading.wait(10)
    maker = threading.Thread(target=upkeep)
    maker.start()
    time.sleep(0.5)  # the upkeep is waiting for its lock now
    started = time.monotonic()
    assert send(workspace, api_key, [event(occurred_at=at(dj_timezone.now()))], now=dj_timezone.now()) == ["accepted"]
    ingest_seconds = time.monotonic() - started
    maker.join(15)
    finish.set()
    reader.join(15)
    assert ingest_seconds < 1, f"ingestion waited {ingest_seconds:.1f} s behind the partition's lock"
    assert "refused" in outcome and "lock" in str(outcome["refused"]).lower(), outcome
    assert 1.5 < outcome["seconds"] < 5
    assert partitions.ensure(extra=[date(2022, 1, 1)]) == [date(2022, 1, 1)]  # the next run

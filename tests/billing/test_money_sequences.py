"""Money is conserved across sequences of closes, reissues and previews (issue 8's findings).

Each test is one realistic sequence an operator or the scheduler produces, checked against what a
person would read on the statements: every event and every fee billed once, every carried balance
billed once, and previews that bill nothing twice."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone as dj_timezone

from billing import tasks
from billing.close import period_close, statement_close
from billing.drafts import statement_preview
from billing.models import BalanceAdjustment, Discount, Plan, PlanAssignment, Statement
from billing.reissue import statement_void_and_reissue
from core.periods import current_period, month_start, previous_month
from tests.conftest import event, ingest

UTC = timezone.utc
JAN, FEB, MAR, APR = (date(2025, m, 1) for m in (1, 2, 3, 4))
ADD_ON = dict(model=..., steps=..., width=..., height=...)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def billed(workspace) -> list[tuple[str, str, int, str]]:
    """Every usage line of every live statement: (month, kind, quantity, amount)."""
    return [
        (f"{line.statement.period:%Y-%m}", line.kind, line.quantity, str(line.amount))
        for line in _live_lines(workspace).filter(kind__in=["usage", "late_usage"])
    ]


def _live_lines(workspace):
    from billing.models import StatementLine

    return (StatementLine.objects.filter(statement__workspace=workspace).exclude(statement__status="void")
            .select_related("statement").order_by("statement__period", "position"))


def lines_of(statement) -> list[tuple[str, str]]:
    return [(line.kind, str(line.amount)) for line in statement.lines.all()]


# --- Finding 1: a skipped month ------------------------------------------------------------------


@pytest.fixture
def reserved(workspace):
    plan = Plan.objects.create(name="Reserved 25", reserved_fee=Decimal(25), free_tier_credit=Decimal(0))
    PlanAssignment.objects.create(workspace=workspace, plan=plan, effective_from=at("2025-01-01T00:00:00"))
    return plan


def test_a_skipped_month_is_closed_before_the_next_and_loses_nothing(workspace, api_key, reserved):
    ingest(workspace, api_key, [event(event_id="jan", occurred_at="2025-01-15T00:00:00Z", quantity=100)],
           now=at("2025-01-15T00:01:00"))
    period_close(JAN, now=at("2025-02-02T02:00:00"))
    ingest(workspace, api_key, [event(event_id="feb-1", occurred_at="2025-02-01T09:59:00Z", quantity=10)],
           now=at("2025-02-01T10:00:00"))  # before January's cutoff
    ingest(workspace, api_key, [event(event_id="feb-20", occurred_at="2025-02-20T00:00:00Z", quantity=20)],
           now=at("2025-02-20T00:01:00"))
    # February's close never ran (its retries ran out); March closes on schedule.
    report = period_close(MAR, now=at("2025-04-02T02:00:00"))
    assert report.caught_up == {FEB: 1}
    february = Statement.objects.get(workspace=workspace, period=FEB)
    assert lines_of(february) == [("usage", "0.120000"), ("fixed_fee", "25.000000")]
    march = Statement.objects.get(workspace=workspace, period=MAR)
    assert lines_of(march) == [("fixed_fee", "25.000000")]
    assert sorted(billed(workspace)) == [("2025-01", "usage", 100, "0.400000"), ("2025-02", "usage", 30, "0.120000")]
    # Closing February by hand now finds it closed.
    assert period_close(FEB, now=at("2025-04-02T03:00:00")).already_closed == 1


def test_the_scheduled_close_catches_up_on_every_unclosed_month(workspace, api_key, reserved, monkeypatch):
    ingest(workspace, api_key, [event(occurred_at="2025-01-15T00:00:00Z", quantity=100)], now=at("2025-01-15T00:01:00"))
    monkeypatch.setattr(dj_timezone, "now", lambda: at("2025-04-02T02:00:00"))
    result = tasks.period_close_and_charge_previous_month.apply().get()
    assert result["period"] == "2025-03"
    assert result["caught_up"] == {"2025-01": 1, "2025-02": 1}
    assert [(f"{s.period:%m}", s.total) for s in Statement.objects.filter(workspace=workspace).order_by("period")] == [
        ("01", Decimal("25.400000")), ("02", Decimal("25.000000")), ("03", Decimal("25.000000"))
    ]


def test_close_period_reports_the_months_it_caught_up_on(workspace, api_key, capsys):
    ingest(workspace, api_key, [event(occurred_at="2025-01-15T00:00:00Z", quantity=1000)], now=at("2025-01-15T00:01:00"))
    ingest(workspace, api_key, [event(occurred_at="2025-02-15T00:00:00Z", quantity=1000)], now=at("2025-02-15T00:01:00"))
    call_command("close_period", "2025-02", "--no-charge")
    out = capsys.readouterr().out
    assert "Closed 2025-02: 2 statements finalized" in out
    assert "first closed the earlier months still open: 2025-01 (1)" in out


# --- Finding 5: a close in the first minutes of the month ------------------------------------------


def test_an_event_between_the_cutoff_and_midnight_is_billed_next_month_without_new_activity(workspace, api_key):
    ingest(workspace, api_key, [event(event_id="early", occurred_at="2025-01-10T00:00:00Z", quantity=500)],
           now=at("2025-01-10T00:01:00"))
    ingest(workspace, api_key, [event(event_id="edge", occurred_at="2025-01-31T23:58:00Z", quantity=250)],
           now=at("2025-01-31T23:58:30"))
    period_close(JAN, now=at("2025-02-01T00:02:00"))  # cutoff 23:57: the edge event is late
    assert billed(workspace) == [("2025-01", "usage", 500, "2.000000")]
    # No activity at all in February; February's close still finds the late event.
    report = period_close(FEB, now=at("2025-03-02T02:00:00"))
    assert report.created == 1
    assert billed(workspace) == [("2025-01", "usage", 500, "2.000000"), ("2025-02", "late_usage", 250, "1.000000")]


# --- Finding 2: void and reissue after the next month closed ------------------------------------


def _carry_case(workspace, api_key, coupon_value: str) -> Statement:
    """January: 325 sd15 images = 1.30, less the free tier and a coupon; February: 1,000 images."""
    Discount.objects.create(workspace=workspace, name="WELCOME", kind="fixed", value=Decimal(coupon_value),
                            duration="once", starts_on=JAN)
    ingest(workspace, api_key, [event(event_id="jan", occurred_at="2025-01-10T00:00:00Z", quantity=325)],
           now=at("2025-01-10T00:01:00"))
    ingest(workspace, api_key, [event(event_id="feb", occurred_at="2025-02-10T00:00:00Z", quantity=1000)],
           now=at("2025-02-10T00:01:00"))
    period_close(JAN, now=at("2025-02-02T02:00:00"))
    period_close(FEB, now=at("2025-03-02T02:00:00"))
    return Statement.objects.get(workspace=workspace, period=JAN)


def _charged_and_owed(workspace) -> Decimal:
    """What the workspace is billed in all: the totals of its live statements that are charged,
    plus the balance its last statement carries and the adjustments still to apply, less the
    balances and adjustments the statements took over from each other."""
    live = list(Statement.objects.filter(workspace=workspace).exclude(status="void").order_by("period"))
    charged = sum((s.total for s in live if s.amount_due_cents), Decimal(0))
    pending = sum((a.amount for a in BalanceAdjustment.objects.filter(workspace=workspace, applied_to=None)), Decimal(0))
    return charged + live[-1].carried_forward + pending


def test_a_reissue_that_no_longer_carries_credits_the_balance_already_billed(workspace, api_key):
    january = _carry_case(workspace, api_key, "0.50")  # 1.30 − 0.50 − 0.50 = 0.30, carried
    february = Statement.objects.get(workspace=workspace, period=FEB)
    assert (january.total, january.carried_forward) == (Decimal("0.3"), Decimal("0.3"))
    assert ("carried_balance", "0.300000") in lines_of(february)  # 4.00 − 0.50 + 0.30 = 3.80
    Discount.objects.filter(workspace=workspace).delete()
    replacement = statement_void_and_reissue(january, actor="staff@mb.test", reason="coupon granted by mistake",
                                             now=at("2025-03-05T00:00:00"))
    assert (replacement.total, replacement.amount_due_cents, replacement.carried_forward) == (Decimal("0.8"), 80, 0)
    adjustment = BalanceAdjustment.objects.get(workspace=workspace)
    assert (adjustment.amount, adjustment.applied_to) == (Decimal("-0.3"), None)
    assert replacement.audit.filter(action="adjustment").exists()
    # Usage of 1.30 + 4.00 less two free tiers: 4.30, billed once in all.
    assert _charged_and_owed(workspace) == Decimal("4.3")
    ingest(workspace, api_key, [event(event_id="mar", occurred_at="2025-03-10T00:00:00Z", quantity=500)],
           now=at("2025-03-10T00:01:00"))
    period_close(MAR, now=at("2025-04-02T02:00:00"))
    march = Statement.objects.get(workspace=workspace, period=MAR)
    assert lines_of(march) == [("usage", "2.000000"), ("free_tier", "-0.500000"), ("adjustment", "-0.300000")]
    adjustment.refresh_from_db()
    assert adjustment.applied_to == march
    assert _charged_and_owed(workspace) == Decimal("4.3") + Decimal("1.5")


def test_a_reissue_that_now_carries_bills_the_balance_on_the_next_statement(workspace, api_key):
    january = _carry_case(workspace, api_key, "0")  # 1.30 − 0.50 = 0.80, due
    assert (january.total, january.amount_due_cents) == (Decimal("0.8"), 80)
    Discount.objects.create(workspace=workspace, name="SORRY", kind="fixed", value=Decimal("0.60"),
                            duration="once", starts_on=JAN)
    replacement = statement_void_and_reissue(january, actor="staff@mb.test", reason="goodwill",
                                             now=at("2025-03-05T00:00:00"))
    assert (replacement.total, replacement.amount_due_cents, replacement.carried_forward) == (
        Decimal("0.2"), 0, Decimal("0.2"))
    assert BalanceAdjustment.objects.get(workspace=workspace).amount == Decimal("0.2")
    period_close(MAR, now=at("2025-04-02T02:00:00"))  # nothing used in March: the 0.20 alone
    march = Statement.objects.get(workspace=workspace, period=MAR)
    assert lines_of(march) == [("adjustment", "0.200000")]
    assert march.carried_forward == Decimal("0.2")  # below the minimum charge: carried on


def test_a_reissue_before_the_next_close_hands_the_new_balance_on_directly(workspace, api_key):
    Discount.objects.create(workspace=workspace, name="WELCOME", kind="fixed", value=Decimal("0.50"),
                            duration="once", starts_on=JAN)
    ingest(workspace, api_key, [event(occurred_at="2025-01-10T00:00:00Z", quantity=325)], now=at("2025-01-10T00:01:00"))
    january, _ = statement_close(workspace, JAN, now=at("2025-02-02T02:00:00"))
    Discount.objects.filter(workspace=workspace).update(value=Decimal("0.60"))
    replacement = statement_void_and_reissue(january, actor="staff", reason="bigger coupon", now=at("2025-02-03T00:00:00"))
    assert replacement.carried_forward == Decimal("0.2")
    assert not BalanceAdjustment.objects.exists()
    february, _ = statement_close(workspace, FEB, now=at("2025-03-02T02:00:00"))
    assert lines_of(february) == [("carried_balance", "0.200000")]


def test_a_credit_larger_than_the_next_statement_is_used_up_over_the_following_ones(workspace, api_key):
    january = _carry_case(workspace, api_key, "0.50")
    february = Statement.objects.get(workspace=workspace, period=FEB)
    Discount.objects.filter(workspace=workspace).delete()
    statement_void_and_reissue(january, actor="staff", reason="coupon removed", now=at("2025-03-05T00:00:00"))
    # March: 25 images (0.10), all inside the free tier: nothing to take the 0.30 credit from.
    ingest(workspace, api_key, [event(occurred_at="2025-03-10T00:00:00Z", quantity=125)], now=at("2025-03-10T00:01:00"))
    period_close(MAR, now=at("2025-04-02T02:00:00"))
    march = Statement.objects.get(workspace=workspace, period=MAR)
    assert march.total == 0 and ("adjustment", "0.000000") not in lines_of(march)
    left = BalanceAdjustment.objects.get(workspace=workspace, applied_to=None)
    assert (left.kind, left.amount) == ("remainder", Decimal("-0.3"))
    ingest(workspace, api_key, [event(occurred_at="2025-04-10T00:00:00Z", quantity=1000)], now=at("2025-04-10T00:01:00"))
    period_close(APR, now=at("2025-05-02T02:00:00"))
    april = Statement.objects.get(workspace=workspace, period=APR)
    assert lines_of(april) == [("usage", "4.000000"), ("free_tier", "-0.500000"), ("adjustment", "-0.300000")]
    assert not BalanceAdjustment.objects.filter(applied_to=None).exists()
    assert february.carried_in == Decimal("0.3")


def test_reissuing_the_statement_that_took_the_carry_keeps_it(workspace, api_key):
    january = _carry_case(workspace, api_key, "0.50")
    february = Statement.objects.get(workspace=workspace, period=FEB)
    Discount.objects.filter(workspace=workspace).delete()
    statement_void_and_reissue(january, actor="staff", reason="coupon removed", now=at("2025-03-05T00:00:00"))
    new_february = statement_void_and_reissue(february, actor="staff", reason="recheck", now=at("2025-03-06T00:00:00"))
    # February billed January's 0.30 once; the correction of it stays a single −0.30, still pending.
    assert ("carried_balance", "0.300000") in lines_of(new_february)
    assert new_february.total == february.total
    assert [a.amount for a in BalanceAdjustment.objects.filter(applied_to=None)] == [Decimal("-0.3")]
    assert _charged_and_owed(workspace) == Decimal("4.3")


# --- Finding 3: the preview in the grace window --------------------------------------------------


def test_the_preview_on_the_first_shows_last_month_pending_and_this_month_alone(workspace, api_key):
    ingest(workspace, api_key, [event(occurred_at="2025-01-20T00:00:00Z", quantity=1000)], now=at("2025-01-20T00:01:00"))
    ingest(workspace, api_key, [event(occurred_at="2025-02-01T08:00:00Z", quantity=250)], now=at("2025-02-01T08:01:00"))
    now = at("2025-02-01T10:00:00")
    pending, current = statement_preview(workspace, now=now)
    assert (pending.period, pending.is_pending, current.period, current.is_pending) == (JAN, True, FEB, False)
    assert [(line.kind, line.amount) for line in current.built.lines] == [
        ("usage", Decimal("1.000000")), ("free_tier", Decimal("-0.500000"))]
    # The pending statement is what the close produces (when nothing arrives meanwhile).
    period_close(JAN, now=now + timedelta(minutes=5))
    closed = Statement.objects.get(workspace=workspace, period=JAN)
    assert [(line.kind, line.amount) for line in pending.built.lines] == [
        (line.kind, line.amount) for line in closed.lines.all()]
    (after,) = statement_preview(workspace, now=now + timedelta(minutes=6))
    assert after.built.lines == current.built.lines


def test_the_preview_api_shows_pending_months_beside_this_months_draft_with_the_real_clock(workspace, api_key, api):
    """With the real clock: usage of last month, never closed, is pending; this month's draft holds
    this month's usage only."""
    now = dj_timezone.now()
    this_month = month_start(now.date())
    last_month = month_start(this_month - timedelta(days=1))
    ingest(workspace, api_key, [
        event(event_id="last", occurred_at=f"{last_month:%Y-%m}-15T00:00:00Z", quantity=1000),
        event(event_id="this", occurred_at=now.isoformat(), quantity=250),
    ], now=now)
    body = api.get("/api/v1/statements/preview").json()
    assert body["period"] == f"{this_month:%Y-%m}"
    assert [line["kind"] for line in body["lines"]] == ["usage", "free_tier"]
    assert body["lines"][0]["quantity"] == 250
    assert [(p["period"], p["status"], p["lines"][0]["quantity"]) for p in body["pending"]] == [
        (f"{last_month:%Y-%m}", "pending", 1000)]


# --- E6: a close that fails for good tells staff ---------------------------------------------------


def test_a_scheduled_close_that_fails_for_good_is_recorded_and_emailed_to_staff(workspace, api_key, settings):
    """A real refusal, no stand-in: the month before was closed by a machine whose clock ran a
    day ahead, so this close's cutoff would go back in time. The run is recorded as failed and
    every staff member is told what to run; nothing is billed meanwhile."""
    from django.contrib.auth import get_user_model
    from django.core import mail

    from billing.models import CloseRun

    get_user_model().objects.create_user("ops", "ops@meterboard.test", "pw", is_staff=True)
    get_user_model().objects.create_user("customer", "customer@example.test", "pw")
    now = dj_timezone.now()
    period = previous_month(current_period(now))
    before = previous_month(current_period(datetime(period.year, period.month, 1, tzinfo=UTC)))
    Statement.objects.create(workspace=workspace, period=before, status="finalized",
                             usage_cutoff=now + timedelta(days=1), finalized_at=now)
    ingest(workspace, api_key, [event(occurred_at=f"{period:%Y-%m}-10T00:00:00Z")], now=now)
    outcome = tasks.period_close_and_charge_previous_month.apply()
    assert outcome.failed()
    run = CloseRun.objects.get(period=period)
    assert (run.status, run.attempts) == ("failed", 1)
    assert "a clock was ahead" in run.error
    (message,) = mail.outbox
    assert message.to == ["ops@meterboard.test"]
    assert f"python manage.py close_period {period:%Y-%m}" in message.body
    assert not Statement.objects.filter(workspace=workspace, period=period).exists()


def test_a_close_run_by_hand_is_recorded_for_the_staff_page(workspace, api_key):
    from billing.models import CloseRun

    ingest(workspace, api_key, [event(occurred_at="2025-01-15T00:00:00Z", quantity=1000)], now=at("2025-01-15T00:01:00"))
    call_command("close_period", "2025-01", "--no-charge")
    run = CloseRun.objects.get(period=JAN)
    assert (run.status, run.statements_created, run.months_closed) == ("succeeded", 1, ["2025-01"])


# --- Concurrent closes --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_closing_a_month_while_the_next_one_closes_bills_each_event_once(workspace, api_key, monkeypatch):
    """An operator closes a skipped January while the beat closes February, seconds apart. An
    event of January arrives between their cutoffs. The operator's close drafts January, then the
    beat's close runs: it must not store February (billing from before January) while January is
    being stored, or March bills the event a second time. One close at a time per workspace."""
    import threading

    from django.db import connection

    import billing.close as services

    operator_now, beat_now = at("2025-03-02T02:00:10"), at("2025-03-02T02:00:05")
    ingest(workspace, api_key, [event(event_id="feb", occurred_at="2025-02-10T00:00:00Z", quantity=500)],
           now=at("2025-02-10T00:01:00"))
    ingest(workspace, api_key, [event(event_id="edge", occurred_at="2025-01-31T12:00:00Z", quantity=250)],
           now=at("2025-03-02T01:55:07"))  # after the beat's cutoff, before the operator's
    drafted, beat_done = threading.Event(), threading.Event()
    drafts = services.statement_drafts

    def drafts_then_pause(workspaces, period, **kwargs):
        found = drafts(workspaces, period, **kwargs)
        if threading.current_thread().name == "operator" and period == JAN:
            drafted.set()
            beat_done.wait(timeout=2)  # the beat runs meanwhile (or waits for this close to finish)
        return found

    monkeypatch.setattr(services, "statement_drafts", drafts_then_pause)
    errors = []

    def run(name, period, now, done=None):
        try:
            period_close(period, now=now)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append((name, exc))
        finally:
            if done:
                done.set()
            connection.close()

    operator = threading.Thread(target=run, name="operator", args=("operator", JAN, operator_now))
    operator.start()
    assert drafted.wait(10)
    beat = threading.Thread(target=run, name="beat", args=("beat", FEB, beat_now, beat_done))
    beat.start()
    operator.join(30)
    beat.join(30)
    assert not errors, errors
    period_close(MAR, now=at("2025-04-02T02:00:00"))
    edge = [line for line in billed(workspace) if line[2] == 250]
    assert edge == [("2025-01", "usage", 250, "1.000000")]


def test_staff_see_adjustments_and_close_runs_in_the_admin(workspace, api_key, client):
    from django.contrib.auth import get_user_model

    january = _carry_case(workspace, api_key, "0.50")
    Discount.objects.filter(workspace=workspace).delete()
    statement_void_and_reissue(january, actor="staff", reason="coupon removed", now=at("2025-03-05T00:00:00"))
    call_command("close_period", "2025-03", "--no-charge")
    client.force_login(get_user_model().objects.create_superuser("boss", "boss@mb.test", "pw"))
    adjustments = client.get("/admin/billing/balanceadjustment/")
    assert adjustments.status_code == 200
    assert "Correction of the January 2025 statement (reissued)" in adjustments.content.decode()
    runs = client.get("/admin/billing/closerun/")
    assert runs.status_code == 200 and "2025-03" in runs.content.decode()
    assert client.get("/admin/billing/closerun/add/").status_code == 403

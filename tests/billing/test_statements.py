"""Statements: building, closing, late usage, carry-forward, plans, coupons and the API."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from billing.close import period_close, statement_close
from billing.drafts import statement_draft
from billing.errors import CloseRefused
from billing.models import Discount, Plan, PlanAssignment, PlanRate, Statement, StatementAudit, VolumeTier
from billing.reissue import statement_void_and_reissue
from tests.conftest import event, ingest

SEP = date(2026, 9, 1)
OCT = date(2026, 10, 1)
NOV = date(2026, 11, 1)
AFTER_OCT = datetime(2026, 11, 2, 2, 0, tzinfo=timezone.utc)
AFTER_NOV = datetime(2026, 12, 2, 2, 0, tzinfo=timezone.utc)
ADD_ON = dict(model=..., steps=..., width=..., height=...)


def lines(statement_or_built):
    found = statement_or_built.lines.all() if hasattr(statement_or_built, "lines") and hasattr(statement_or_built.lines, "all") else statement_or_built.lines
    return [(line.kind, line.description, line.quantity, str(line.unit_price), str(line.amount)) for line in found]


@pytest.fixture
def october(workspace, api_key):
    """October: 500 sd15 30-step images, 20 sdxl 50-step 1024×1824, 10 upscales (4 on spot); and
    September closed on October 2nd with one upscale, before 1,000 more September images arrive."""
    ingest(workspace, api_key, [event(event_id="september", occurred_at="2026-09-10T00:00:00Z", feature="upscaling",
                                      **ADD_ON)], now=datetime(2026, 9, 10, 0, 1, tzinfo=timezone.utc))
    period_close(SEP, now=datetime(2026, 10, 2, 2, 0, tzinfo=timezone.utc))
    at = datetime(2026, 11, 1, 1, 0, tzinfo=timezone.utc)
    ingest(workspace, api_key, [
        event(occurred_at="2026-10-01T00:00:00Z", quantity=500),
        event(occurred_at="2026-10-15T10:00:00Z", model="sdxl", steps=50, width=1024, height=1824, quantity=20),
        event(occurred_at="2026-10-31T23:59:59Z", feature="upscaling", quantity=6, **ADD_ON),
        event(occurred_at="2026-10-20T00:00:00Z", feature="upscaling", quantity=4, spot=True, **ADD_ON),
        event(occurred_at="2026-09-30T23:59:59Z", quantity=1000),  # September: not October's
        event(occurred_at="2026-11-01T00:00:00Z", quantity=1000),  # November: not October's
    ], now=at)
    return workspace


def test_a_month_is_itemised_with_the_free_tier(october):
    statement, created = statement_close(october, OCT, now=AFTER_OCT)
    assert created and statement.status == "finalized"
    # September's statement was closed before this event arrived: it is late usage on October's.
    assert lines(statement) == [
        ("usage", "Image generation SD15 · 30 steps · 512×512", 500, "0.004000", "2.000000"),
        ("usage", "Image generation SDXL · 50 steps · 1024×1824", 20, "0.169000", "3.380000"),
        ("usage", "Upscaling", 6, "0.030000", "0.180000"),
        ("usage", "Upscaling · spot", 4, "0.030000", "0.120000"),
        ("late_usage", "Late usage for September 2026: Image generation SD15 · 30 steps · 512×512", 1000,
         "0.004000", "4.000000"),
        ("free_tier", "Monthly free tier", 1, "-0.500000", "-0.500000"),
    ]
    assert statement.total == Decimal("9.180000")
    assert statement.amount_due_cents == 918
    assert statement.carried_forward == 0
    assert StatementAudit.objects.get(statement=statement).action == "finalized"


def test_closing_twice_leaves_one_statement(october):
    first, created = statement_close(october, OCT, now=AFTER_OCT)
    again, created_again = statement_close(october, OCT, now=AFTER_OCT + timedelta(hours=1))
    assert created and not created_again and first.pk == again.pk
    report = period_close(OCT, now=AFTER_OCT + timedelta(hours=2))
    assert (report.created, report.already_closed) == (0, 1)
    assert Statement.objects.filter(workspace=october, period=OCT).count() == 1


def test_the_preview_is_what_closing_would_produce(october):
    draft = statement_draft(october, OCT, now=AFTER_OCT)
    statement, _ = statement_close(october, OCT, now=AFTER_OCT)
    assert lines(draft.built) == lines(statement)
    assert (draft.built.total, draft.built.amount_due_cents) == (statement.total, statement.amount_due_cents)


def test_a_late_event_lands_on_the_next_statement_once(october, api_key):
    statement_close(october, OCT, now=AFTER_OCT)
    # Arrives after October was closed, for October 30th.
    ingest(october, api_key, [event(occurred_at="2026-10-30T12:00:00Z", model="sdxl", width=1024, height=1024,
                                    quantity=10)], now=AFTER_OCT + timedelta(hours=1))
    november, _ = statement_close(october, NOV, now=AFTER_NOV)
    assert ("late_usage", "Late usage for October 2026: Image generation SDXL · 30 steps · 1024×1024", 10,
            "0.032000", "0.320000") in lines(november)
    assert not any("September" in line[1] for line in lines(november))
    # November's own usage (1000 × 0.004) is there too, and October's statement did not change.
    assert ("usage", "Image generation SD15 · 30 steps · 512×512", 1000, "0.004000", "4.000000") in lines(november)
    assert Statement.objects.get(period=OCT).total == Decimal("9.180000")


def test_an_event_received_just_before_the_close_but_within_the_lag_is_late_not_lost(workspace, api_key):
    close_at = datetime(2026, 11, 2, 2, 0, tzinfo=timezone.utc)
    ingest(workspace, api_key, [event(event_id="in-flight", occurred_at="2026-10-31T23:00:00Z", quantity=250)],
           now=close_at - timedelta(minutes=1))
    october, _ = statement_close(workspace, OCT, now=close_at)
    assert october is None  # the only event arrived within the lag: nothing to bill yet
    # October is still open, so closing November closes October first, and the event is billed there.
    november, _ = statement_close(workspace, NOV, now=AFTER_NOV)
    assert november is None
    october = Statement.objects.get(workspace=workspace, period=OCT)
    assert ("usage", "Image generation SD15 · 30 steps · 512×512", 250, "0.004000", "1.000000") in lines(october)


def test_an_event_received_within_the_lag_after_a_statement_is_late_usage_on_the_next(october, api_key):
    ingest(october, api_key, [event(event_id="in-flight", occurred_at="2026-10-31T23:00:00Z", quantity=250)],
           now=AFTER_OCT - timedelta(minutes=1))
    statement, _ = statement_close(october, OCT, now=AFTER_OCT)
    assert "250" not in str(lines(statement))
    november, _ = statement_close(october, NOV, now=AFTER_NOV)
    assert lines(november) == [
        ("usage", "Image generation SD15 · 30 steps · 512×512", 1000, "0.004000", "4.000000"),
        ("late_usage", "Late usage for October 2026: Image generation SD15 · 30 steps · 512×512", 250,
         "0.004000", "1.000000"),
        ("free_tier", "Monthly free tier", 1, "-0.500000", "-0.500000"),
    ]


def test_a_total_below_the_minimum_charge_is_carried_forward(workspace, api_key):
    ingest(workspace, api_key, [event(occurred_at="2026-10-10T00:00:00Z", quantity=200)],
           now=datetime(2026, 10, 11, tzinfo=timezone.utc))  # 0.80 − 0.50 free = 0.30
    october, _ = statement_close(workspace, OCT, now=AFTER_OCT)
    assert (october.total, october.amount_due_cents, october.carried_forward) == (Decimal("0.3"), 0, Decimal("0.3"))
    ingest(workspace, api_key, [event(occurred_at="2026-11-10T00:00:00Z", quantity=300)],
           now=datetime(2026, 11, 11, tzinfo=timezone.utc))  # 1.20 − 0.50 + 0.30 carried = 1.00
    november, _ = statement_close(workspace, NOV, now=AFTER_NOV)
    assert lines(november)[-1] == ("carried_balance", "Balance carried from earlier months", 1, "0.300000", "0.300000")
    assert (november.total, november.amount_due_cents, november.carried_forward) == (Decimal("1.0"), 100, 0)


def test_a_workspace_with_no_usage_gets_no_statement(workspace, other_workspace, api_key):
    ingest(workspace, api_key, [event(occurred_at="2026-10-10T00:00:00Z")], now=AFTER_OCT - timedelta(days=1))
    report = period_close(OCT, now=AFTER_OCT)
    assert (report.workspaces, report.created) == (1, 1)
    assert not Statement.objects.filter(workspace=other_workspace).exists()


def test_closing_is_refused_for_an_open_month_or_out_of_order(workspace, api_key):
    ingest(workspace, api_key, [event(occurred_at="2026-11-10T00:00:00Z")], now=datetime(2026, 11, 10, tzinfo=timezone.utc))
    with pytest.raises(CloseRefused, match="not over yet"):
        statement_close(workspace, NOV, now=datetime(2026, 11, 30, tzinfo=timezone.utc))
    november, created = statement_close(workspace, NOV, now=AFTER_NOV)
    assert created
    # An October event arrives after November closed: October cannot be closed any more, and the
    # event is billed on the next statement as late usage.
    ingest(workspace, api_key, [event(event_id="late", occurred_at="2026-10-10T00:00:00Z", quantity=300)],
           now=AFTER_NOV + timedelta(hours=1))
    with pytest.raises(CloseRefused, match="later month is already closed"):
        statement_close(workspace, OCT, now=AFTER_NOV + timedelta(hours=2))
    report = period_close(OCT, now=AFTER_NOV + timedelta(hours=2))
    assert (report.created, report.already_closed, report.later_closed) == (0, 0, 1)
    december, _ = statement_close(workspace, date(2026, 12, 1), now=datetime(2027, 1, 2, 2, tzinfo=timezone.utc))
    assert lines(december)[0] == ("late_usage", "Late usage for October 2026: Image generation SD15 · 30 steps · 512×512",
                                  300, "0.004000", "1.200000")


def test_closing_a_month_closes_every_earlier_open_month_first(october):
    november, created = statement_close(october, NOV, now=AFTER_NOV)
    assert created
    october_statement = Statement.objects.get(workspace=october, period=OCT)
    assert october_statement.total == Decimal("9.180000")  # as if October had been closed on time
    assert [a.action for a in october_statement.audit.all()] == ["finalized"]


def test_plan_features_all_apply_in_order(october):
    plan = Plan.objects.create(
        name="Enterprise", free_tier_credit=Decimal("1.00"), spot_discount_percent=Decimal(50),
        volume_mode="graduated", savings_commitment=Decimal(20), savings_discount_percent=Decimal(10),
        reserved_fee=Decimal(100), reserved_included_usage=Decimal(2),
    )
    PlanRate.objects.create(plan=plan, feature="generation", model="sdxl", percent_of_list=Decimal(80))
    PlanRate.objects.create(plan=plan, feature="upscaling", unit_price=Decimal("0.020"))
    VolumeTier.objects.create(plan=plan, up_to=Decimal(5), discount_percent=Decimal(0))
    VolumeTier.objects.create(plan=plan, up_to=None, discount_percent=Decimal(10))
    PlanAssignment.objects.create(workspace=october, plan=plan, effective_from=datetime(2026, 9, 1, tzinfo=timezone.utc))
    statement, _ = statement_close(october, OCT, now=AFTER_OCT)
    assert lines(statement) == [
        ("usage", "Image generation SD15 · 30 steps · 512×512", 500, "0.004000", "2.000000"),
        ("usage", "Image generation SDXL · 50 steps · 1024×1824", 20, "0.135200", "2.704000"),  # 80 % of 0.169
        ("usage", "Upscaling", 6, "0.020000", "0.120000"),  # absolute custom rate
        ("usage", "Upscaling · spot", 4, "0.010000", "0.040000"),  # then 50 % spot
        ("late_usage", "Late usage for September 2026: Image generation SD15 · 30 steps · 512×512", 1000,
         "0.004000", "4.000000"),
        # usage 8.864: 0 % on the first 5, 10 % on 3.864 → 0.3864
        ("volume_discount", "Volume discount (graduated)", 1, "-0.386400", "-0.386400"),
        ("savings_discount", "Savings plan: 10% off", 1, "-0.847760", "-0.847760"),  # 10 % of 8.4776
        ("free_tier", "Monthly free tier", 1, "-1.000000", "-1.000000"),
        # commitment 20 − discounted usage 7.62984 (before the free tier)
        ("commitment_shortfall", "Savings-plan commitment $20.00: shortfall", 1, "12.370160", "12.370160"),
        ("fixed_fee", "Reserved capacity", 1, "100.000000", "100.000000"),
        ("fixed_fee", "Usage included with reserved capacity", 1, "-2.000000", "-2.000000"),
    ]
    assert statement.total == Decimal("117.000000")
    assert statement.plan == plan


def test_all_units_volume_tiers_discount_the_whole_amount(october):
    plan = Plan.objects.create(name="Volume", volume_mode="all_units")
    VolumeTier.objects.create(plan=plan, up_to=Decimal(5), discount_percent=Decimal(0))
    VolumeTier.objects.create(plan=plan, up_to=None, discount_percent=Decimal(10))
    PlanAssignment.objects.create(workspace=october, plan=plan, effective_from=datetime(2026, 9, 1, tzinfo=timezone.utc))
    statement, _ = statement_close(october, OCT, now=AFTER_OCT)
    # usage 9.68 reaches the second tier: 10 % of all of it
    assert ("volume_discount", "Volume discount (all units)", 1, "-0.968000", "-0.968000") in lines(statement)


@pytest.mark.parametrize(
    "effective_from, plan_name",
    [
        (datetime(2026, 10, 15, tzinfo=timezone.utc), "Half price"),  # mid-October: prices all October
        (datetime(2026, 10, 31, 23, 59, 59, tzinfo=timezone.utc), "Half price"),
        (datetime(2026, 11, 1, tzinfo=timezone.utc), "Pay as you go"),  # from November: not October
    ],
)
def test_a_plan_change_mid_month_prices_the_whole_month(october, effective_from, plan_name):
    half = Plan.objects.create(name="Half price")
    for feature in ("generation", "upscaling"):
        PlanRate.objects.create(plan=half, feature=feature, percent_of_list=Decimal(50))
    PlanAssignment.objects.create(workspace=october, plan=half, effective_from=effective_from)
    statement, _ = statement_close(october, OCT, now=AFTER_OCT)
    assert statement.plan.name == plan_name
    expected_sd15 = "0.002000" if plan_name == "Half price" else "0.004000"
    assert lines(statement)[0][3] == expected_sd15


@pytest.mark.parametrize(
    "kind, value, duration, months, features, starts, ends, expected",
    [
        ("percent", "10", "once", None, [], date(2026, 10, 5), None, "-0.968000"),  # before the free tier
        ("fixed", "2.50", "forever", None, [], date(2026, 1, 1), None, "-2.500000"),
        ("percent", "50", "repeating", 2, ["upscaling"], date(2026, 9, 1), None, "-0.150000"),
        ("percent", "50", "repeating", 1, [], date(2026, 9, 1), None, None),  # used up in September
        ("percent", "50", "once", None, [], date(2026, 11, 1), None, None),  # not yet
        ("percent", "50", "forever", None, [], date(2026, 1, 1), date(2026, 9, 30), None),  # ended
        ("fixed", "500", "once", None, [], date(2026, 10, 1), None, "-9.680000"),  # never below zero
    ],
)
def test_coupons(october, kind, value, duration, months, features, starts, ends, expected):
    Discount.objects.create(workspace=october, name="PROMO", kind=kind, value=Decimal(value), duration=duration,
                            duration_months=months, features=features, starts_on=starts, ends_on=ends)
    statement, _ = statement_close(october, OCT, now=AFTER_OCT)
    coupon_lines = [line for line in lines(statement) if line[0] == "coupon"]
    if expected is None:
        assert coupon_lines == []
    else:
        assert [line[4] for line in coupon_lines] == [expected]
    assert statement.total >= 0


def test_void_and_reissue_keeps_both_with_an_audit_trail(october):
    original, _ = statement_close(october, OCT, now=AFTER_OCT)
    Discount.objects.create(workspace=october, name="SORRY", kind="fixed", value=Decimal(1), duration="once",
                            starts_on=OCT)
    replacement = statement_void_and_reissue(original, actor="staff@meterboard.test", reason="goodwill credit",
                                             now=AFTER_OCT + timedelta(days=1))
    original.refresh_from_db()
    assert original.status == "void" and replacement.status == "finalized"
    assert replacement.reissue_of == original
    assert replacement.total == original.total - 1
    assert [a.action for a in original.audit.all()] == ["finalized", "voided"]
    credit_note = original.invoices.get(kind="credit_note")
    assert credit_note.cancels == original.invoices.get(kind="invoice")
    assert original.audit.get(action="voided").note == (
        f"goodwill credit (credit note {credit_note.number} cancels invoice {credit_note.cancels.number})"
    )
    assert replacement.invoices.get(kind="invoice").number != credit_note.cancels.number
    assert replacement.audit.filter(action="reissued").exists()
    assert lines(replacement)[:5] == lines(original)[:5]  # the same usage, up to the same cutoff


def test_close_period_command(october, capsys):
    call_command("close_period", "2026-10", "--no-charge")
    out = capsys.readouterr()
    assert "1 statements finalized" in out.out
    assert "closing 2026-10: 1/1 workspaces" in out.err
    call_command("close_period", "2026-10", "--no-charge")
    assert "0 statements finalized, 1 already closed" in capsys.readouterr().out
    with pytest.raises(CommandError, match="write YYYY-MM"):
        call_command("close_period", "October")
    with pytest.raises(CommandError, match="not over yet"):
        call_command("close_period", "2099-01")
    with pytest.raises(CommandError, match="No workspace 'nope'"):
        call_command("close_period", "2026-10", "--workspace", "nope")


def test_the_statements_api_lists_details_and_previews(october, api, other_api):
    statement, _ = statement_close(october, OCT, now=AFTER_OCT)
    september = Statement.objects.get(workspace=october, period=SEP)
    listed = api.get("/api/v1/statements").json()
    assert [s["id"] for s in listed] == [statement.pk, september.pk]
    detail = api.get(f"/api/v1/statements/{statement.pk}").json()
    assert {k: detail[k] for k in ("period", "status", "total", "amount_due_cents", "carried_forward")} == {
        "period": "2026-10", "status": "finalized", "total": "9.180000", "amount_due_cents": 918,
        "carried_forward": "0.000000",
    }
    assert detail["lines"][0] == {"kind": "usage", "description": "Image generation SD15 · 30 steps · 512×512",
                                  "quantity": 500, "unit_price": "0.004000", "amount": "2.000000"}
    assert {line["kind"] for line in detail["lines"]} == {"usage", "late_usage", "free_tier"}
    preview = api.get("/api/v1/statements/preview").json()
    assert preview["status"] == "draft" and preview["id"] is None
    # The other workspace sees none of it, even by id.
    assert other_api.get("/api/v1/statements").json() == []
    assert other_api.get(f"/api/v1/statements/{statement.pk}").status_code == 404


def test_the_preview_api_is_the_current_month_draft(workspace, api):
    from django.utils import timezone as dj_timezone

    from tests.conftest import post_events

    now = dj_timezone.now()
    post_events(api, [event(occurred_at=(now - timedelta(minutes=10)).isoformat(), quantity=1000)])
    preview = api.get("/api/v1/statements/preview").json()
    assert preview["period"] == f"{now:%Y-%m}"
    assert [(line["kind"], line["amount"]) for line in preview["lines"]] == [
        ("usage", "4.000000"), ("free_tier", "-0.500000")]
    assert (preview["total"], preview["amount_due_cents"]) == ("3.500000", 350)


def test_staff_void_and_reissue_from_the_admin(october, client):
    from django.contrib.auth import get_user_model

    statement, _ = statement_close(october, OCT, now=AFTER_OCT)
    client.force_login(get_user_model().objects.create_superuser("boss@mb.test", "boss@mb.test", "pw"))
    assert client.get(f"/admin/billing/statement/{statement.pk}/change/").status_code == 200
    response = client.post("/admin/billing/statement/", {"action": "void_and_reissue", "_selected_action": [statement.pk]})
    assert response.status_code == 302
    assert Statement.objects.get(pk=statement.pk).status == "void"
    assert Statement.objects.get(reissue_of=statement).audit.filter(actor="boss@mb.test", action="reissued").exists()


def test_a_close_killed_half_way_finishes_on_the_next_run(db, monkeypatch):
    """Each workspace closes in its own transaction: a run stopped between two leaves finished
    statements finished and the rest untouched; the next run does the rest, once."""
    import billing.close as services
    from workspaces.services import api_key_create, workspace_create

    for n in range(7):
        ws = workspace_create(slug=f"ws-{n}", owner_email=f"o{n}@test.example")
        key = api_key_create(workspace=ws, name="k").api_key
        ingest(ws, key, [event(occurred_at="2026-10-05T00:00:00Z", quantity=500 + n)], now=AFTER_OCT - timedelta(days=1))
    monkeypatch.setattr(services, "_CHUNK", 3)

    def killed_after_first_chunk(done, total):
        raise KeyboardInterrupt("SIGINT")

    with pytest.raises(KeyboardInterrupt):
        period_close(OCT, now=AFTER_OCT, progress=killed_after_first_chunk)
    assert Statement.objects.count() == 3
    report = period_close(OCT, now=AFTER_OCT + timedelta(minutes=30))
    assert (report.created, report.already_closed) == (4, 3)
    assert Statement.objects.count() == 7
    assert sorted(Statement.objects.values_list("total", flat=True)) == [Decimal("1.5") + Decimal("0.004") * n for n in range(7)]


@pytest.mark.parametrize("mode, expected", [("graduated", "25.000000"), ("all_units", "30.000000")])
def test_usage_above_the_last_bounded_tier_gets_that_tiers_percent(mode, expected):
    from billing.statement import Tier, volume_discount

    tiers = [Tier(Decimal(100), Decimal(5)), Tier(Decimal(200), Decimal(10))]
    # graduated: 5 % of the first 100, 10 % of the remaining 200; all units: 10 % of 300
    assert volume_discount(Decimal(300), tiers, mode) == Decimal(expected)


def test_a_close_reports_a_month_closed_by_a_later_close_as_already_closed(october):
    statement_close(october, NOV, now=AFTER_NOV)
    report = period_close(OCT, now=AFTER_NOV)
    assert (report.created, report.already_closed, report.later_closed) == (0, 1, 0)

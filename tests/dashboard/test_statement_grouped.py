"""A month's statement as a person reads it (issue 16, part 2): usage grouped by feature and model
with subtotals, the discounts, credits, tax and totals first, each group's lines one click away;
the same in the print view. (The PDF: tests/billing/test_invoices.py; the grouping itself:
tests/billing/test_statement_groups.py.)"""

from __future__ import annotations

import re
from datetime import date, datetime
from datetime import timezone as dt_timezone
from decimal import Decimal

import pytest

from billing.models import Statement, StatementLine
from billing.selectors import default_plan
from billing.statement import Coupon, PlanTerms, Tax, UsageGroup, build
from core.money import usd_precise
from tests.dashboard.conftest import person, sign_in
from workspaces.models import Membership

D = Decimal
UTC = dt_timezone.utc
OCT = date(2026, 10, 1)


def long_statement(workspace) -> Statement:
    """October, 300 usage lines (SDXL, SD15 and Flux at every steps × size, upscaling and
    captioning), a coupon, the free tier, 20% VAT and a carried balance: 304 lines."""
    usage = [UsageGroup("generation", model, steps, size, size, composition, False, D(price), 7 + steps)
             for model, price in (("sdxl", "0.0488"), ("sd15", "0.004"), ("flux", "0.03"))
             for steps in range(10, 60)
             for size, composition in ((512, False), (1024, True))]  # fmt: skip
    usage += [UsageGroup("upscaling", "", 0, 0, 0, False, spot, D("0.03"), 40) for spot in (False, True)]
    usage += [UsageGroup("captioning", "", 0, 0, 0, False, False, D("0.015"), 12)]
    usage = usage[:297] + usage[-3:]
    built = build(usage=usage, plan=PlanTerms(spot_discount_percent=D(40)), coupons=[Coupon("AUTUMN", "percent", D(10))],
                  tax=Tax("VAT", D(20)), carried_balance=D("0.31"))  # fmt: skip
    plan = default_plan()
    if plan.pk is None:  # a transactional test before this one emptied the table migration 0004 fills
        plan.save()
    statement = Statement.objects.create(
        workspace=workspace, period=OCT, status=Statement.Status.FINALIZED, plan=plan, total=built.total,
        amount_due_cents=built.amount_due_cents, carried_forward=built.carried_forward, tax=built.tax, tax_name="VAT",
        tax_percent=D(20), usage_cutoff=datetime(2026, 11, 2, 1, 55, tzinfo=UTC), finalized_at=datetime(2026, 11, 2, 2, 0, tzinfo=UTC),
    )  # fmt: skip
    StatementLine.objects.bulk_create(
        StatementLine(statement=statement, position=n, kind=line.kind, description=line.description, quantity=line.quantity,
                      unit_price=line.unit_price, amount=line.amount)
        for n, line in enumerate(built.lines, start=1)
    )  # fmt: skip
    return statement


def subtotal(statement, prefix: str) -> Decimal:
    return sum(line.amount for line in statement.lines.all() if line.description.startswith(prefix))


@pytest.fixture
def owner(workspace):
    return person("owner@acme.test", workspace=workspace, role=Membership.Role.OWNER)


@pytest.mark.django_db
def test_the_statement_page_shows_grouped_subtotals_and_totals_before_the_details(client, owner, workspace, other_workspace):
    statement = long_statement(workspace)
    assert statement.lines.count() == 304
    client.force_login(owner)
    html = client.get(f"/statements/{statement.pk}/?workspace={workspace.slug}").content.decode()
    summary = html[html.index('id="statement-summary"'):html.index('id="statement-details"')]
    details = html[html.index('id="statement-details"'):]
    sdxl = subtotal(statement, "Image generation SDXL")
    assert re.search(r"Image generation · SDXL</a>.*?100 lines.*?<td[^>]*>4,150 images</td><td[^>]*>"
                     + re.escape(usd_precise(sdxl)), summary, re.S)  # fmt: skip
    for text in ("Image generation · SD15", "Image generation · FLUX", "Upscaling", "Captioning",
                 "Coupon AUTUMN: 10% off", "Monthly free tier", "VAT 20%", "Balance carried from earlier months",
                 usd_precise(statement.total), f"${statement.amount_due_cents / 100:,.2f}"):  # fmt: skip
        assert text in summary, text
    assert "steps" not in summary  # the line detail waits below
    # Each group folds its lines: sizes, steps, composition and spot, with its subtotal.
    assert details.count("<details") == 5 and " open" not in re.findall(r"<details[^>]*>", details)[0]
    assert "30 steps · 1024×1024 · composition control" in details and "<th scope=\"row\">spot<span class=\"more" in details
    assert details.count('class="kind-usage"') == 300
    assert "Coupon AUTUMN" not in details
    # Another workspace's member cannot read it.
    stranger = person("owner@globex.test", workspace=other_workspace, role=Membership.Role.OWNER)
    client.force_login(stranger)
    assert client.get(f"/statements/{statement.pk}/?workspace={workspace.slug}").status_code in (403, 404)
    assert client.get(f"/statements/{statement.pk}/?workspace={other_workspace.slug}").status_code == 404


@pytest.mark.django_db
def test_the_print_view_has_the_same_groups_then_every_line_unfolded(client, owner, workspace):
    statement = long_statement(workspace)
    client.force_login(owner)
    html = client.get(f"/statements/{statement.pk}/print/?workspace={workspace.slug}").content.decode()
    summary, details = html.split('id="statement-details"')
    assert "Image generation · SDXL" in summary and usd_precise(subtotal(statement, "Upscaling")) in summary
    assert "VAT 20%" in summary and "Amount due" in summary and "steps" not in summary
    assert re.findall(r"<details[^>]*>", details) == [f'<details class="lines-details usage-group" id="group-{n}" open>' for n in range(1, 6)]
    assert details.count('class="kind-usage"') == 300


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_300_line_statements_total_is_in_the_first_screen_and_a_group_unfolds(page, owner, workspace):
    statement = long_statement(workspace)
    sign_in(page, "owner@acme.test")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{page.base_url}/statements/{statement.pk}/?workspace=acme")
    for element in ("#statement-total", "#amount-due"):
        box = page.locator(element).bounding_box()
        assert box["y"] + box["height"] <= 900, f"{element} is below the first screen: {box}"
    assert page.locator("#amount-due").inner_text() == f"${statement.amount_due_cents / 100:,.2f}"
    sdxl = page.locator("details.usage-group", has_text="Image generation · SDXL").first
    height = page.evaluate("() => document.documentElement.scrollHeight")
    assert height < 2000, f"the page is {height}px tall with every group folded"  # 12,600 px as one list
    assert not sdxl.locator("table").is_visible()
    sdxl.locator("summary").click()
    assert sdxl.locator("tbody tr").count() == 100 and sdxl.locator("table").is_visible()

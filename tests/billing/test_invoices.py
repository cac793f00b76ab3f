"""Invoices as finance teams need them (issue 14): billing profiles, tax, gap-free numbering, the
PDF (rendered and read back), the e-mails that carry it, receipts and credit notes."""

from __future__ import annotations

import io
import threading
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.db import connection, connections, transaction
from django.test import Client
from pypdf import PdfReader
from rest_framework.test import APIClient

from billing import statement as engine
from billing.close import period_close, statement_close
from billing.invoice_emails import invoice_emails_sweep
from billing.invoices import numbers_take
from billing.models import BillingProfile, Invoice, InvoiceSequence, Statement, TaxRate
from billing.reissue import statement_void_and_reissue
from core.money import usd_precise
from tests.conftest import client_with, event, ingest, on_postgres
from workspaces.models import Membership, Scope
from workspaces.services import api_key_create, workspace_create

OCT = date(2026, 10, 1)
RECEIVED = datetime(2026, 11, 1, 1, 0, tzinfo=timezone.utc)
CLOSED = datetime(2026, 11, 2, 2, 0, tzinfo=timezone.utc)
SDXL = dict(model="sdxl", steps=50, width=1024, height=1824)  # $0.169 each


def pdf_text(content: bytes) -> str:
    assert content.startswith(b"%PDF-")
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)


def october(workspace, api_key) -> None:
    """500 sd15 images ($2.00) + 20 sdxl ($3.38) in October: $5.38, $4.88 after the free tier."""
    ingest(workspace, api_key, [
        event(occurred_at="2026-10-03T10:00:00Z", quantity=500),
        event(occurred_at="2026-10-20T10:00:00Z", quantity=20, **SDXL),
    ], now=RECEIVED)  # fmt: skip


def member(workspace, email: str, role: str):
    user = get_user_model().objects.create(username=email, email=email)
    Membership.objects.create(workspace=workspace, user=user, role=role)
    return user


def session(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def owner(workspace):
    return Membership.objects.get(workspace=workspace, role=Membership.Role.OWNER).user


# --- Tax ---------------------------------------------------------------------------------------


def _groups(amount_units: int) -> list[engine.UsageGroup]:
    return [engine.UsageGroup("generation", "sd15", 30, 512, 512, False, False, Decimal("0.004"), amount_units)]


def test_tax_is_on_the_months_own_charges_after_every_discount_and_before_the_carried_balance():
    coupon = engine.Coupon("WELCOME", "percent", Decimal(10))
    built = engine.build(
        usage=_groups(2500),  # $10.00
        plan=engine.PlanTerms(),
        coupons=[coupon],  # − $1.00
        carried_balance=Decimal("0.30"),  # taxed on its own statement already
        tax=engine.Tax("VAT", Decimal(20)),
    )
    kinds = [line.kind for line in built.lines]
    assert kinds == ["usage", "coupon", "free_tier", "tax", "carried_balance"]
    # (10.00 − 1.00 − 0.50) × 20 % = 1.70, not (… + 0.30) × 20 %.
    assert built.tax == Decimal("1.700000") and built.lines[3].description == "VAT 20%"
    assert built.total == Decimal("10.500000") and built.amount_due_cents == 1050  # 8.50 + 1.70 + 0.30


def test_tax_is_rounded_half_up_to_whole_cents_and_absent_at_zero():
    built = engine.build(usage=_groups(1251), plan=engine.PlanTerms(free_tier_credit=Decimal(0)), tax=engine.Tax("GST", Decimal("8.875")))
    # 1251 × $0.004 = $5.004; 8.875 % of it is $0.444105 → $0.44
    assert built.tax == Decimal("0.440000") and built.total == Decimal("5.444000")
    untaxed = engine.build(usage=_groups(1251), plan=engine.PlanTerms(free_tier_credit=Decimal(0)))
    assert untaxed.tax == 0 and "tax" not in [line.kind for line in untaxed.lines]
    free = engine.build(usage=_groups(100), plan=engine.PlanTerms(), tax=engine.Tax("VAT", Decimal(20)))
    assert free.total == 0 and free.tax == 0  # nothing left after the free tier: no tax line


def test_a_workspaces_own_rate_wins_over_its_countrys_and_the_statement_keeps_it(api, workspace, api_key, other_workspace):
    BillingProfile.objects.create(workspace=workspace, country="DE")
    BillingProfile.objects.create(workspace=other_workspace, country="DE")
    TaxRate.objects.create(country="DE", name="VAT", percent=Decimal(19))
    TaxRate.objects.create(workspace=other_workspace, name="VAT", percent=Decimal(0))
    october(workspace, api_key)
    october(other_workspace, api_key_create(workspace=other_workspace, name="k").api_key)
    period_close(OCT, now=CLOSED)
    taxed = Statement.objects.get(workspace=workspace)
    assert (taxed.tax_name, taxed.tax_percent, taxed.tax) == ("VAT", Decimal(19), Decimal("0.930000"))  # 19 % of 4.88
    assert taxed.total == Decimal("5.810000") and taxed.amount_due_cents == 581
    assert taxed.lines.get(kind="tax").amount == Decimal("0.930000")
    exempt = Statement.objects.get(workspace=other_workspace)
    assert exempt.tax == 0 and exempt.total == Decimal("4.880000")
    # The API shows it too.
    body = api.get(f"/api/v1/statements/{taxed.pk}").json()
    assert (body["tax"], body["tax_name"], body["tax_percent"]) == ("0.930000", "VAT", "19.000")


def test_the_preview_shows_the_tax_the_close_will_add(api, workspace, api_key):
    TaxRate.objects.create(workspace=workspace, name="VAT", percent=Decimal(20))
    ingest(workspace, api_key, [event(quantity=500)])
    body = api.get("/api/v1/statements/preview").json()
    assert body["tax_name"] == "VAT" and Decimal(body["tax"]) == Decimal("0.30")  # 20 % of (2.00 − 0.50)
    assert body["invoice"] is None


# --- Numbering ---------------------------------------------------------------------------------


def test_each_finalized_statement_gets_the_next_number_of_its_year(workspace, api_key, other_workspace):
    october(workspace, api_key)
    october(other_workspace, api_key_create(workspace=other_workspace, name="k").api_key)
    period_close(OCT, now=CLOSED)
    numbers = sorted(Invoice.objects.values_list("number", flat=True))
    assert numbers == ["MB-2026-000001", "MB-2026-000002"]
    # December's close happens in January: a new year, a new series.
    ingest(workspace, api_key, [event(occurred_at="2026-12-10T10:00:00Z", quantity=500)], now=datetime(2026, 12, 10, 12, tzinfo=timezone.utc))
    statement_close(workspace, date(2026, 12, 1), now=datetime(2027, 1, 2, 2, tzinfo=timezone.utc))
    assert Invoice.objects.filter(year=2027).get().number == "MB-2027-000001"
    assert InvoiceSequence.objects.get(series="invoice", year=2026).last == 2


def test_a_rolled_back_close_gives_its_numbers_back(workspace, api_key):
    with pytest.raises(RuntimeError), transaction.atomic():
        assert list(numbers_take(Invoice.Kind.INVOICE, 2026, 3)) == [1, 2, 3]
        raise RuntimeError("the close failed after taking its numbers")
    october(workspace, api_key)
    statement, _ = statement_close(workspace, OCT, now=CLOSED)
    assert statement.invoices.get().number == "MB-2026-000001"


@pytest.mark.django_db(transaction=True)
def test_numbers_are_only_taken_inside_the_invoices_transaction():
    with pytest.raises(RuntimeError, match="inside the transaction"):
        numbers_take(Invoice.Kind.INVOICE, 2026, 1)


@pytest.mark.django_db(transaction=True)
def test_concurrent_closes_leave_no_gap_and_no_duplicate():
    """Twelve workspaces closed by six threads at once, each its own transaction and connection,
    two of them failing after taking their numbers: numbers 1..10 exactly, one per statement."""
    if not on_postgres():
        pytest.skip("SQLite serialises every write transaction: there is no concurrency to test")
    workspaces = []
    for n in range(12):
        ws = workspace_create(slug=f"w{n}", owner_email=f"o{n}@w.test", name=f"W{n}")
        october(ws, api_key_create(workspace=ws, name="k").api_key)
        workspaces.append(ws)
    failing = {workspaces[3].pk, workspaces[8].pk}
    barrier = threading.Barrier(6)
    errors = []

    def close(chunk):
        try:
            barrier.wait(timeout=30)
            for ws in chunk:
                try:
                    with transaction.atomic():
                        statement_close(ws, OCT, now=CLOSED)
                        if ws.pk in failing:
                            raise LookupError("fails after its invoice was numbered")
                except LookupError:
                    pass
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=close, args=(workspaces[i::6],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    sequences = sorted(Invoice.objects.filter(kind="invoice").values_list("sequence", flat=True))
    assert sequences == list(range(1, 11))
    assert Statement.objects.count() == 10 == Invoice.objects.values("statement").distinct().count()
    assert not Invoice.objects.filter(statement__workspace_id__in=failing).exists()


# --- The PDF -----------------------------------------------------------------------------------


@pytest.fixture
def profiled(workspace):
    return BillingProfile.objects.create(
        workspace=workspace, legal_name="Acme Łódź Sp. z o.o.", address_line1="ul. Piotrkowska 1",
        postal_code="90-001", city="Łódź", country="PL", tax_id="PL1234567890",
        billing_emails=["ap@acme.test", "cfo@acme.test"],
    )  # fmt: skip


def test_the_invoice_pdf_reads_back_with_seller_buyer_lines_tax_total_and_status(api, workspace, api_key, profiled, settings):
    settings.INVOICE_SELLER = {"legal_name": "Meterboard Ltd", "address": "1 Main St\nDublin", "tax_id": "IE9999999X", "email": "billing@mb.test"}
    TaxRate.objects.create(country="PL", name="VAT", percent=Decimal(23))
    october(workspace, api_key)
    statement, _ = statement_close(workspace, OCT, now=CLOSED)
    invoice = statement.invoices.get()
    response = api.get(f"/api/v1/statements/{statement.pk}/invoice.pdf")
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == f'attachment; filename="{invoice.number}.pdf"'
    text = pdf_text(response.content)
    for expected in (
        f"Invoice {invoice.number}", "Issued 02 November 2026", "Period October 2026",
        "Meterboard Ltd", "Dublin", "Tax id: IE9999999X",  # the seller
        "Acme Łódź Sp. z o.o.", "ul. Piotrkowska 1", "90-001 Łódź", "Poland", "Tax id: PL1234567890",  # the buyer
        "Image generation SD15 · 30 steps · 512×512", "500", "$0.004", "$2.00",
        "Image generation SDXL · 50 steps · 1024×1824", "$0.169", "$3.38",
        "Monthly free tier", "−$0.50",
        "Subtotal (after discounts and credits)", "$4.88", "VAT 23%", "$1.12", "Total", "$6.00",
        "Amount due (USD)", "Due: charged to the card on file.",
    ):  # fmt: skip
        assert expected in text, f"{expected!r} not in the PDF:\n{text}"

    # The buyer is copied when issued: a later edit changes the next invoices, not this one.
    profiled.legal_name = "Renamed Ltd"
    profiled.save()
    assert "Acme Łódź Sp. z o.o." in pdf_text(api.get(f"/api/v1/statements/{statement.pk}/invoice.pdf").content)

    # Paid: the same invoice says so.
    Statement.objects.filter(pk=statement.pk).update(status="paid", paid_at=datetime(2026, 11, 3, tzinfo=timezone.utc))
    assert "Paid on 03 November 2026 (card)." in pdf_text(api.get(f"/api/v1/statements/{statement.pk}/invoice.pdf").content)


def test_a_long_statement_shows_grouped_subtotals_and_totals_first_then_every_line_in_an_annex(api, workspace, api_key):
    ingest(workspace, api_key, [
        *(event(occurred_at="2026-10-03T10:00:00Z", model="sdxl", steps=steps, width=1024, height=1024, quantity=2)
          for steps in range(1, 121)),
        *(event(occurred_at="2026-10-04T10:00:00Z", model="sd15", steps=steps, width=512, height=512, quantity=10)
          for steps in range(1, 41)),
        event(occurred_at="2026-10-05T10:00:00Z", feature="upscaling", quantity=3, model=..., steps=..., width=..., height=...),
    ], now=RECEIVED)  # fmt: skip
    statement, _ = statement_close(workspace, OCT, now=CLOSED)
    lines = list(statement.lines.all())
    assert len(lines) == 162  # 161 usage lines and the free tier
    usage = {prefix: sum(line.amount for line in lines if line.description.startswith(prefix))
             for prefix in ("Image generation SDXL", "Image generation SD15", "Upscaling")}  # fmt: skip
    content = api.get(f"/api/v1/statements/{statement.pk}/invoice.pdf").content
    pages = [page.extract_text() for page in PdfReader(io.BytesIO(content)).pages]
    first = pages[0]
    # Page one: a subtotal per feature and model, the other lines, and the totals (pypdf reads a cell a line).
    for expected in (f"Image generation · SD15\n400 images\n{usd_precise(usage['Image generation SD15'])}",
                     f"Image generation · SDXL\n240 images\n{usd_precise(usage['Image generation SDXL'])}",
                     f"Upscaling\n3 images\n{usd_precise(usage['Upscaling'])}",
                     "Monthly free tier", "Total", "Amount due (USD)", f"${statement.amount_due_cents / 100:,.2f}"):  # fmt: skip
        assert expected in first, f"{expected!r} not on the first page:\n{first}"
    assert "steps" not in first  # no line detail before the totals
    # Then the annex: every line, in order, over the following pages (its header row repeats).
    annex = "\n".join(pages[1:])
    assert "Annex" not in first and f"Annex: every line of statement #{statement.pk}" in pages[1]
    assert len(pages) >= 4 and all("Description" in page for page in pages[2:])
    found = [annex.find(line.description) for line in lines]
    assert -1 not in found and found == sorted(found), "every line, in statement order"


def test_invoices_are_scoped_to_the_callers_workspace(workspace, api_key, other_workspace):
    october(workspace, api_key)
    statement, _ = statement_close(workspace, OCT, now=CLOSED)
    other_key = api_key_create(workspace=other_workspace, name="k").secret
    for path in (f"/api/v1/statements/{statement.pk}/invoice.pdf", f"/api/v1/statements/{statement.pk}/credit-note.pdf"):
        response = client_with(other_key).get(path)
        assert response.status_code == 404 and response["Content-Type"].startswith("application/json")
    stranger = get_user_model().objects.create(username="s@x.test", email="s@x.test")
    Membership.objects.create(workspace=other_workspace, user=stranger, role="owner")
    page = Client()
    page.force_login(stranger)
    assert page.get(f"/statements/{statement.pk}/invoice.pdf?workspace=globex").status_code == 404
    # Asked for as a PDF, a refusal is still JSON.
    response = client_with(other_key).get(f"/api/v1/statements/{statement.pk}/invoice.pdf", HTTP_ACCEPT="application/pdf")
    assert response.status_code == 404 and b"No invoice" in response.content
    unscoped = api_key_create(workspace=workspace, name="writer", scopes=[Scope.USAGE_WRITE]).secret
    assert client_with(unscoped).get(f"/api/v1/statements/{statement.pk}/invoice.pdf").status_code == 403


def test_the_statement_page_links_the_invoice_and_serves_it(workspace, api_key):
    october(workspace, api_key)
    statement, _ = statement_close(workspace, OCT, now=CLOSED)
    number = statement.invoices.get().number
    page = Client()
    page.force_login(owner(workspace))
    html = page.get(f"/statements/{statement.pk}/").content.decode()
    assert f"Invoice {number} (PDF)" in html and f"/statements/{statement.pk}/invoice.pdf?workspace=acme" in html
    pdf = page.get(f"/statements/{statement.pk}/invoice.pdf?workspace=acme")
    assert pdf.status_code == 200 and f"Invoice {number}" in pdf_text(pdf.content)
    assert page.get(f"/statements/{statement.pk}/credit-note.pdf?workspace=acme").status_code == 404


# --- E-mails, receipts, credit notes -----------------------------------------------------------


def test_the_statement_ready_email_goes_to_the_billing_emails_with_the_pdf(
    workspace, api_key, profiled, django_capture_on_commit_callbacks, celery_eager
):
    member(workspace, "admin@acme.test", Membership.Role.ADMIN)
    october(workspace, api_key)
    with django_capture_on_commit_callbacks(execute=True):
        statement, _ = statement_close(workspace, OCT, now=CLOSED)
    invoice = statement.invoices.get()
    assert sorted(m.to[0] for m in mail.outbox) == ["ap@acme.test", "cfo@acme.test"]  # not the owners
    message = mail.outbox[0]
    assert message.subject == f"Your Meterboard statement for October 2026 is ready: invoice {invoice.number}"
    assert "Amount due:  $4.88" in message.body
    [(name, content, mimetype)] = message.attachments
    assert (name, mimetype) == (f"{invoice.number}.pdf", "application/pdf")
    assert f"Invoice {invoice.number}" in pdf_text(content) and "Acme Łódź Sp. z o.o." in pdf_text(content)
    invoice.refresh_from_db()
    assert invoice.emails_enqueued_at is not None


def test_without_billing_emails_the_owners_and_admins_get_it(workspace, api_key, django_capture_on_commit_callbacks, celery_eager):
    member(workspace, "admin@acme.test", Membership.Role.ADMIN)
    member(workspace, "viewer@acme.test", Membership.Role.VIEWER)
    october(workspace, api_key)
    with django_capture_on_commit_callbacks(execute=True):
        statement_close(workspace, OCT, now=CLOSED)
    assert sorted(m.to[0] for m in mail.outbox) == ["admin@acme.test", "owner@acme.test"]


def test_emails_lost_with_the_broker_are_sent_by_the_sweep(workspace, api_key, profiled, celery_eager, monkeypatch):
    october(workspace, api_key)
    statement, _ = statement_close(workspace, OCT, now=CLOSED)  # on-commit callbacks not run: never enqueued
    assert not mail.outbox
    assert invoice_emails_sweep(now=CLOSED) == 0  # too recent: its e-mails may still be on their way
    later = datetime(2026, 11, 2, 3, 0, tzinfo=timezone.utc)
    assert invoice_emails_sweep(now=later) == 1
    assert len(mail.outbox) == 2
    assert invoice_emails_sweep(now=later) == 0  # once


def test_a_reissue_issues_a_credit_note_and_mails_both(api,
    workspace, api_key, profiled, django_capture_on_commit_callbacks, celery_eager
):
    october(workspace, api_key)
    statement, _ = statement_close(workspace, OCT, now=CLOSED)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        replacement = statement_void_and_reissue(statement, actor="staff@mb", reason="wrong plan", now=datetime(2026, 11, 5, tzinfo=timezone.utc))
    original = statement.invoices.get(kind="invoice")
    credit_note = statement.invoices.get(kind="credit_note")
    new = replacement.invoices.get()
    assert (original.number, credit_note.number, new.number) == ("MB-2026-000001", "MB-CN-2026-000001", "MB-2026-000002")
    assert credit_note.cancels == original
    text = pdf_text(api.get(f"/api/v1/statements/{statement.pk}/credit-note.pdf").content)
    assert f"Credit note {credit_note.number}" in text and f"Cancels invoice {original.number}" in text
    assert "−$4.88" in text and "Nothing is due" in text
    voided = pdf_text(api.get(f"/api/v1/statements/{statement.pk}/invoice.pdf").content)
    assert f"Cancelled by credit note {credit_note.number}." in voided
    body = api.get(f"/api/v1/statements/{statement.pk}").json()
    assert body["invoice"]["number"] == original.number and body["credit_note"]["number"] == credit_note.number
    assert body["credit_note"]["pdf"] == f"/api/v1/statements/{statement.pk}/credit-note.pdf"
    # The replacement's e-mail carries its invoice and the credit note.
    assert len(mail.outbox) == 2
    names = [name for name, _, _ in mail.outbox[0].attachments]
    assert names == [f"{new.number}.pdf", f"{credit_note.number}.pdf"]
    assert f"credit note {credit_note.number}, also attached, cancels invoice {original.number}" in mail.outbox[0].body


# --- The billing profile: API and page ---------------------------------------------------------


PROFILE = {
    "legal_name": "Acme GmbH", "address_line1": "Hauptstraße 1", "address_line2": "", "city": "Berlin",
    "postal_code": "10115", "region": "", "country": "de", "tax_id": "DE123456789",
    "billing_emails": ["AP@Acme.TEST", "ap@acme.test", "cfo@acme.test"],
}  # fmt: skip


def test_owners_set_the_profile_through_the_api_and_everyone_reads_it(api, workspace, api_key):
    response = session(owner(workspace)).put("/api/v1/billing/profile", PROFILE, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["country"] == "DE" and body["billing_emails"] == ["AP@acme.test", "ap@acme.test", "cfo@acme.test"]
    assert api.get("/api/v1/billing/profile").json()["legal_name"] == "Acme GmbH"
    patched = api.patch("/api/v1/billing/profile", {"tax_id": "DE 999 999 999"}, format="json").json()
    assert patched["tax_id"] == "DE 999 999 999" and patched["legal_name"] == "Acme GmbH"
    replaced = api.put("/api/v1/billing/profile", {"legal_name": "Acme AG"}, format="json").json()
    assert replaced["legal_name"] == "Acme AG" and replaced["country"] == "" and replaced["billing_emails"] == []


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"country": "XX"}, "country", "not an ISO 3166-1 alpha-2"),
        ({"country": "Germany"}, "country", "no more than 2"),
        ({"billing_emails": ["not-an-address"]}, "billing_emails", "not an e-mail address"),
        ({"billing_emails": "ap@acme.test"}, "billing_emails", "list"),
        ({"billing_emails": [f"a{n}@x.test" for n in range(11)]}, "billing_emails", "no more than 10"),
        ({"legal_name": "Acme\nInjected: header"}, "legal_name", "one line"),
        ({"legal_name": "x" * 201}, "legal_name", "no more than 200"),
        ({"tax_id": "<script>"}, "tax_id", "3-64 letters and digits"),
        ({"colour": "red"}, "colour", "Unknown field"),
    ],
)
def test_a_bad_profile_is_a_400_on_its_field_and_nothing_is_stored(api, workspace, api_key, body, field, message):
    response = api.patch("/api/v1/billing/profile", body, format="json")
    assert response.status_code == 400, response.content
    assert message in str(response.json()), response.json()
    assert field in str(response.json())
    assert not BillingProfile.objects.exists()


def test_viewers_and_keys_without_billing_write_cannot_change_the_profile(workspace, api_key, other_workspace):
    viewer = session(member(workspace, "viewer@acme.test", Membership.Role.VIEWER))
    assert viewer.get("/api/v1/billing/profile?workspace=acme").status_code == 200
    assert viewer.patch("/api/v1/billing/profile?workspace=acme", {"legal_name": "x"}, format="json").status_code == 403
    reader = api_key_create(workspace=workspace, name="r", scopes=[Scope.USAGE_READ]).secret
    assert client_with(reader).patch("/api/v1/billing/profile", {"legal_name": "x"}, format="json").status_code == 403
    # A key writes its own workspace's profile only.
    other_key = api_key_create(workspace=other_workspace, name="k").secret
    assert client_with(other_key).put("/api/v1/billing/profile", {"legal_name": "Globex"}, format="json").status_code == 200
    assert BillingProfile.objects.get().workspace == other_workspace


def test_the_billing_details_page_saves_for_admins_and_shows_errors_per_field(workspace):
    TaxRate.objects.create(country="DE", name="VAT", percent=Decimal(19))
    admin = Client()
    admin.force_login(member(workspace, "admin@acme.test", Membership.Role.ADMIN))
    bad = admin.post("/billing-details/save/?workspace=acme", {"legal_name": "Acme", "country": "ZZ", "billing_emails": "nope"})
    assert bad.status_code == 400
    html = bad.content.decode()
    assert "Country: &#x27;ZZ&#x27; is not an ISO 3166-1 alpha-2" in html and "is not an e-mail address" in html
    assert 'value="Acme"' in html  # what was typed stays
    saved = admin.post("/billing-details/save/?workspace=acme", {
        "legal_name": "Acme GmbH", "country": "DE", "city": "Berlin", "billing_emails": "ap@acme.test\ncfo@acme.test",
    })  # fmt: skip
    assert saved.status_code == 302
    profile = BillingProfile.objects.get(workspace=workspace)
    assert (profile.legal_name, profile.country, profile.billing_emails) == ("Acme GmbH", "DE", ["ap@acme.test", "cfo@acme.test"])
    page = admin.get("/billing-details/?workspace=acme").content.decode()
    assert "VAT at <strong>19%</strong>" in page
    viewer = Client()
    viewer.force_login(member(workspace, "viewer@acme.test", Membership.Role.VIEWER))
    read = viewer.get("/billing-details/?workspace=acme").content.decode()
    assert "Acme GmbH" in read and "save-billing-details" not in read
    assert viewer.post("/billing-details/save/?workspace=acme", {"legal_name": "x"}).status_code == 403


def test_the_migration_numbers_statements_finalized_before_invoices_existed(workspace, api_key, other_workspace):
    """billing 0009's backfill, run on statements that have no invoice."""
    import importlib

    from django.apps import apps

    october(workspace, api_key)
    october(other_workspace, api_key_create(workspace=other_workspace, name="k").api_key)
    period_close(OCT, now=CLOSED)
    Invoice.objects.all().delete()
    InvoiceSequence.objects.all().delete()
    module = importlib.import_module("billing.migrations.0009_invoices_tax_billing_profiles")
    module.invoices_for_existing_statements(apps, connection.schema_editor())
    assert sorted(Invoice.objects.values_list("number", flat=True)) == ["MB-2026-000001", "MB-2026-000002"]
    assert not Invoice.objects.filter(emails_enqueued_at__isnull=True).exists()  # nobody is mailed about old months
    # The next close continues the series.
    ingest(workspace, api_key, [event(occurred_at="2026-11-03T10:00:00Z", quantity=500)], now=datetime(2026, 11, 3, 12, tzinfo=timezone.utc))
    statement, _ = statement_close(workspace, date(2026, 11, 1), now=datetime(2026, 12, 2, tzinfo=timezone.utc))
    assert statement.invoices.get().number == "MB-2026-000003"

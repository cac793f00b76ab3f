"""The statements pages: the list, the preview of the months not closed yet, one statement (page,
print, CSV), and retrying a failed payment."""

from __future__ import annotations

from decimal import Decimal

from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from billing.invoice_pdf import pdf_response
from billing.invoices import credit_note_of, invoice_of
from billing.models import Invoice, Statement
from billing.payment_report import State as ChargeState
from billing.payments import statement_charge
from billing.statement_groups import grouped
from billing.stripe_api import PaymentsNotConfigured
from core.money import CENT
from core.replicas import replica_reads

from .. import clock
from ..access import MANAGE, back, workspace_page
from ..csv_export import csv_lines, money
from ..selectors import statements as selectors


def _statement(request, statement_id: int) -> Statement:
    statement = selectors.statement_of(request.access.workspace, statement_id)
    if statement is None:
        raise Http404("No such statement in this workspace.")
    return statement


def _can_retry(request, statement: Statement) -> bool:
    return request.access.can_manage and statement.status == Statement.Status.PAYMENT_FAILED and statement.amount_due_cents > 0


@require_GET
@replica_reads
@workspace_page()
def statements(request):
    workspace = request.access.workspace
    return render(
        request,
        "dashboard/statements.html",
        {"statements": selectors.statements_of(workspace), "preview": selectors.statement_preview(workspace, now=clock.now())},
    )


@require_GET
@replica_reads
@workspace_page()
def statement_preview(request):
    """This month's draft, and the pending statement of every earlier month not closed yet."""
    preview = selectors.statement_preview(request.access.workspace, now=clock.now())
    return render(request, "dashboard/statement_preview.html", {"preview": preview, "draft": preview.current})


@require_GET
@replica_reads
@workspace_page()
def statement_detail(request, statement_id: int):
    statement = _statement(request, statement_id)
    lines = list(statement.lines.all())
    return render(
        request,
        "dashboard/statement.html",
        {
            "statement": statement,
            "grouped": grouped(lines),
            "can_retry": _can_retry(request, statement),
            "failure": selectors.last_attempt_error(statement),
            "invoice": invoice_of(statement),
            "credit_note": credit_note_of(statement),
        },
    )


@require_GET
@replica_reads
@workspace_page()
def statement_print(request, statement_id: int):
    statement = _statement(request, statement_id)
    return render(request, "dashboard/statement_print.html", {"statement": statement, "grouped": grouped(statement.lines.all())})


@require_GET
@replica_reads
@workspace_page()
def statement_csv(request, statement_id: int):
    statement = _statement(request, statement_id)
    # Text as str (neutralised when it could be a formula), amounts as Decimal (written as numbers).
    rows = [("position", "kind", "description", "quantity", "unit_price_usd", "amount_usd")]
    rows += [(line.position, line.kind, line.description, line.quantity, money(line.unit_price), money(line.amount))
             for line in statement.lines.all()]  # fmt: skip
    rows += [("", "total", "Total", "", "", money(statement.total)),
             ("", "amount_due", "Amount due (USD, rounded to cents)", "", "",
              money(Decimal(statement.amount_due_cents).scaleb(-2), CENT))]  # fmt: skip
    response = HttpResponse("".join(csv_lines(rows)), content_type="text/csv; charset=utf-8")
    name = f"meterboard-{request.access.workspace.slug}-statement-{statement.period:%Y-%m}-{statement.pk}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _document(request, statement_id: int, kind: str) -> HttpResponse:
    statement = _statement(request, statement_id)
    invoice = statement.invoices.filter(kind=kind).select_related("cancels").first()
    if invoice is None:
        raise Http404("This statement has no such document.")
    return pdf_response(invoice)


@require_GET
@replica_reads
@workspace_page()
def statement_invoice_pdf(request, statement_id: int):
    return _document(request, statement_id, Invoice.Kind.INVOICE)


@require_GET
@replica_reads
@workspace_page()
def statement_credit_note_pdf(request, statement_id: int):
    return _document(request, statement_id, Invoice.Kind.CREDIT_NOTE)


@require_POST
@workspace_page(MANAGE)
def statement_retry(request, statement_id: int):
    statement = _statement(request, statement_id)
    if not _can_retry(request, statement):
        messages.info(request, "This statement has no failed payment to retry.")
        return back(request, "dashboard:statement", statement.pk)
    try:
        charge = statement_charge(statement, retry_now=True)
    except PaymentsNotConfigured:
        messages.error(request, "Payments are not configured on this server.")
    else:
        _report_charge(request, charge)
    return back(request, "dashboard:statement", statement.pk)


def _report_charge(request, charge) -> None:
    """The outcome of a retried charge, as a message on the statement's page."""
    attempt = charge.attempt
    if charge.state == ChargeState.PAID:
        messages.success(request, f"Paid: attempt {attempt.number} succeeded.")
    elif charge.state in (ChargeState.DECLINED, ChargeState.NO_CARD):
        messages.error(request, f"The payment failed again: {attempt.error}")
    elif charge.state == ChargeState.NOT_SENT:
        messages.warning(request, "Stripe cannot be reached right now: the payment is sent automatically once it answers.")
    elif charge.state in (ChargeState.PENDING, ChargeState.IN_PROGRESS):
        messages.info(request, "The payment is being processed; this page shows the outcome once Stripe reports it.")
    else:
        messages.info(request, "Nothing to charge: the statement is paid or has nothing due.")

"""An invoice or credit note as a PDF (ReportLab), rendered on demand from what was stored when it
was issued (number, seller, buyer), the statement's lines and its payment status now.

Fonts: DejaVu Sans, shipped in billing/fonts (no network, no system font needed), so that any
name or address prints, accents and non-Latin scripts included. Amounts print as the statement page
shows them: unit prices and amounts with the places they need (stored amounts have 6), the amount
due in whole cents.
"""

from __future__ import annotations

import io
from decimal import Decimal
from functools import cache
from pathlib import Path
from xml.sax.saxutils import escape

import pycountry
from django.http import HttpResponse
from reportlab.lib import colors
from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import LongTable, PageBreak, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from core.money import ZERO, usd_cents, usd_precise

from .models import Invoice, Statement
from .statement_groups import GroupedStatement, grouped

FONTS = Path(__file__).resolve().parent / "fonts"
NOT_OWN_CHARGES = {"tax", "carried_balance", "adjustment"}  # lines that are not the month's own charges


@cache
def _fonts() -> tuple[str, str]:
    pdfmetrics.registerFont(TTFont("DejaVuSans", FONTS / "DejaVuSans.ttf"))
    pdfmetrics.registerFont(TTFont("DejaVuSans-Bold", FONTS / "DejaVuSans-Bold.ttf"))
    return "DejaVuSans", "DejaVuSans-Bold"


def pdf_filename(invoice: Invoice) -> str:
    return f"{invoice.number}.pdf"


def pdf_response(invoice: Invoice) -> HttpResponse:
    """The document as a download (the statement page's link and the API answer the same)."""
    response = HttpResponse(invoice_pdf(invoice), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="{pdf_filename(invoice)}"'
    return response


def country_name(code: str) -> str:
    country = pycountry.countries.get(alpha_2=code) if code else None
    return country.name if country is not None else code


def payment_status(invoice: Invoice) -> str:
    """What the invoice says about its payment, as of now."""
    statement = invoice.statement
    if invoice.kind == Invoice.Kind.CREDIT_NOTE:
        return f"Credit note: cancels invoice {invoice.cancels.number} in full. Nothing is due."
    if statement.status == Statement.Status.VOID:
        note = getattr(invoice, "credit_note", None)
        return f"Cancelled by credit note {note.number}." if note else "Cancelled: the statement was voided."
    if statement.status == Statement.Status.PAID:
        return f"Paid on {statement.paid_at:%d %B %Y} (card)."
    if statement.amount_due_cents == 0:
        if statement.carried_forward > 0:
            return "Nothing due now: below the $0.50 minimum charge, the total is carried to the next statement."
        return "Nothing due."
    if statement.status == Statement.Status.PAYMENT_FAILED:
        return "Payment failed: the card on file was declined. It is retried automatically, and at once when a card is added."
    return "Due: charged to the card on file."


def _address(party: dict, *, seller: bool) -> list[str]:
    lines = [party.get("legal_name", "")]
    if seller:
        lines += [line for line in party.get("address", "").splitlines() if line.strip()]
    else:
        lines += [party.get("address_line1", ""), party.get("address_line2", "")]
        city = " ".join(p for p in (party.get("postal_code", ""), party.get("city", "")) if p)
        lines += [city, party.get("region", ""), country_name(party.get("country", ""))]
    if party.get("tax_id"):
        lines.append(f"Tax id: {party['tax_id']}")
    if seller and party.get("email"):
        lines.append(party["email"])
    return [line for line in lines if line]


def _table_style(regular: str) -> TableStyle:
    return TableStyle([
        ("FONTNAME", (0, 0), (-1, -1), regular),
        ("FONTSIZE", (0, 0), (-1, -1), 8.5),
        ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LINEBELOW", (0, 0), (-1, 0), 0.75, colors.HexColor("#323f4b")),
        ("LINEBELOW", (0, 1), (-1, -1), 0.25, colors.HexColor("#cbd2d9")),
        ("LEFTPADDING", (0, 0), (0, -1), 0),
    ])  # fmt: skip


def _grouped_table(statement: GroupedStatement, para, label, sign: Decimal, regular: str) -> LongTable:
    """Usage per feature and model with its subtotal, then every other line as itself."""
    rows = [[para("Description", label), para("Quantity", label), para("Amount", label)]]
    for group in statement.groups:
        rows.append([para(group.label), f"{group.quantity:,} {group.unit}", usd_precise(sign * group.amount)])
    for line in statement.other_lines:
        rows.append([para(line.description), "", usd_precise(sign * line.amount)])
    if len(rows) == 1:
        rows.append([para("Nothing billed."), "", ""])
    table = LongTable(rows, colWidths=[114 * mm, 35 * mm, 25 * mm], repeatRows=1)
    table.setStyle(_table_style(regular))
    return table


def _lines_table(lines: list, para, label, sign: Decimal, regular: str) -> LongTable:
    rows = [[para("Description", label), para("Quantity", label), para("Unit price", label), para("Amount", label)]]
    for line in lines:
        rows.append([para(line.description), f"{line.quantity:,}", usd_precise(line.unit_price), usd_precise(sign * line.amount)])
    if not lines:
        rows.append([para("Nothing billed."), "", "", ""])
    table = LongTable(rows, colWidths=[104 * mm, 20 * mm, 25 * mm, 25 * mm], repeatRows=1)
    table.setStyle(_table_style(regular))
    return table


def invoice_pdf(invoice: Invoice) -> bytes:
    """The document, as PDF bytes."""
    regular, bold = _fonts()
    statement = invoice.statement
    credit = invoice.kind == Invoice.Kind.CREDIT_NOTE
    sign = Decimal(-1) if credit else Decimal(1)
    text = ParagraphStyle("text", fontName=regular, fontSize=9, leading=12)
    small = ParagraphStyle("small", parent=text, fontSize=8, leading=10, textColor=colors.HexColor("#52606d"))
    heading = ParagraphStyle("heading", parent=text, fontName=bold, fontSize=18, leading=22)
    right = ParagraphStyle("right", parent=text, alignment=TA_RIGHT)
    label = ParagraphStyle("label", parent=small, fontName=bold)
    annex_heading = ParagraphStyle("annex", parent=text, fontName=bold, fontSize=12, leading=16)

    def para(value: str, style=text) -> Paragraph:
        return Paragraph(escape(value), style)

    title = "Credit note" if credit else "Invoice"
    facts = [
        f"{title} {invoice.number}",
        f"Issued {invoice.issued_at:%d %B %Y}",
        f"Period {statement.period:%B %Y} (UTC)",
        f"Workspace {invoice.buyer.get('workspace', statement.workspace.slug)} · statement #{statement.pk}",
    ]
    if credit:
        facts.append(f"Cancels invoice {invoice.cancels.number}")
    story = [
        Table(
            [[para(title, heading), [para(line, right) for line in facts]]],
            colWidths=[80 * mm, 94 * mm],
            style=TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0)]),
        ),
        Spacer(1, 8 * mm),
        Table(
            [[para("From", label), para("Billed to", label)],
             [[para(line) for line in _address(invoice.seller, seller=True)],
              [para(line) for line in _address(invoice.buyer, seller=False)]]],
            colWidths=[87 * mm, 87 * mm],
            style=TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0)]),
        ),  # fmt: skip
        Spacer(1, 8 * mm),
    ]

    lines = list(statement.lines.all())
    story += [_grouped_table(grouped(lines), para, label, sign, regular), Spacer(1, 6 * mm)]
    subtotal = sum((line.amount for line in lines if line.kind not in NOT_OWN_CHARGES), ZERO)
    earlier = sum((line.amount for line in lines if line.kind in ("carried_balance", "adjustment")), ZERO)
    totals = [["Subtotal (after discounts and credits)", usd_precise(sign * subtotal)]]
    if statement.tax or statement.tax_name:
        totals.append([f"{statement.tax_name} {statement.tax_percent.normalize():f}%", usd_precise(sign * statement.tax)])
    else:
        totals.append(["Tax", usd_precise(ZERO)])
    if earlier:
        totals.append(["From earlier statements (carried balance, corrections)", usd_precise(sign * earlier)])
    totals.append(["Total", usd_precise(sign * statement.total)])
    if statement.carried_forward and not credit:
        totals.append(["Carried to the next statement (below the $0.50 minimum charge)", usd_precise(statement.carried_forward)])
    totals.append(["Amount due (USD)", usd_cents(0 if credit else statement.amount_due_cents)])
    summary = Table(totals, colWidths=[124 * mm, 50 * mm])
    summary.setStyle(TableStyle([
        ("FONTNAME", (0, 0), (-1, -1), regular),
        ("FONTNAME", (0, -1), (-1, -1), bold),
        ("FONTSIZE", (0, 0), (-1, -1), 9),
        ("ALIGN", (0, 0), (-1, -1), "RIGHT"),
        ("LINEABOVE", (0, -1), (-1, -1), 0.75, colors.HexColor("#323f4b")),
    ]))  # fmt: skip
    story += [summary, Spacer(1, 6 * mm), para(payment_status(invoice), ParagraphStyle("status", parent=text, fontName=bold))]
    story += [Spacer(1, 4 * mm), para(
        "Amounts in US dollars. Usage is priced per unit to a millionth of a dollar; the amount due is rounded once, to cents. "
        "Every line of the statement is in the annex below.",
        small,
    )]  # fmt: skip
    # The annex: every line as stored, in order, after the totals (a 300-line month would
    # otherwise push the totals to page 8).
    story += [PageBreak(), para(f"Annex: every line of statement #{statement.pk}", annex_heading), Spacer(1, 4 * mm),
              _lines_table(lines, para, label, sign, regular)]  # fmt: skip

    buffer = io.BytesIO()

    def footer(canvas, doc) -> None:
        canvas.saveState()
        canvas.setFont(regular, 7.5)
        canvas.setFillColor(colors.HexColor("#7b8794"))
        canvas.drawString(18 * mm, 10 * mm, f"{invoice.number} · {invoice.seller.get('legal_name', '')}")
        canvas.drawRightString(A4[0] - 18 * mm, 10 * mm, f"Page {doc.page}")
        canvas.restoreState()

    document = SimpleDocTemplate(
        buffer, pagesize=A4, leftMargin=18 * mm, rightMargin=18 * mm, topMargin=16 * mm, bottomMargin=18 * mm,
        title=f"{title} {invoice.number}", author=invoice.seller.get("legal_name", ""), invariant=1,
    )  # fmt: skip
    document.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()

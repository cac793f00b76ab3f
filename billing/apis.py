"""Statements API: list, detail and the current month's preview."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.permissions import SAFE_METHODS
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from workspaces.access import WorkspaceAccess
from workspaces.models import Scope

from .drafts import statement_preview
from .invoice_pdf import pdf_response
from .invoices import credit_note_of, invoice_of
from .models import Invoice, Statement
from .profiles import BillingProfileSerializer, billing_profile_of, billing_profile_update


@extend_schema_field(OpenApiTypes.STR)
class PeriodField(serializers.Field):
    """A billing period as YYYY-MM."""

    def to_representation(self, value):
        return f"{value:%Y-%m}"


class LineSerializer(serializers.Serializer):
    kind = serializers.CharField()
    description = serializers.CharField()
    quantity = serializers.IntegerField()
    unit_price = serializers.DecimalField(max_digits=18, decimal_places=6)
    amount = serializers.DecimalField(max_digits=18, decimal_places=6)


class InvoiceRefSerializer(serializers.Serializer):
    """An invoice or credit note of a statement; `pdf` downloads it (same credentials)."""

    number = serializers.CharField(help_text="Gap-free per year, e.g. MB-2026-000123 (credit notes MB-CN-2026-000007)")
    issued_at = serializers.DateTimeField()
    pdf = serializers.CharField(help_text="Path of the PDF under the API")


class StatementSerializer(serializers.Serializer):
    """Of a Statement (with its plan and lines fetched)."""

    id = serializers.IntegerField(allow_null=True)
    period = PeriodField()
    status = serializers.CharField()
    plan = serializers.CharField(source="plan.name", allow_null=True)
    total = serializers.DecimalField(max_digits=18, decimal_places=6)
    amount_due_cents = serializers.IntegerField()
    carried_forward = serializers.DecimalField(max_digits=18, decimal_places=6)
    finalized_at = serializers.DateTimeField(allow_null=True)
    paid_at = serializers.DateTimeField(allow_null=True)
    reissue_of = serializers.IntegerField(source="reissue_of_id", allow_null=True)
    tax = serializers.DecimalField(max_digits=18, decimal_places=6, help_text="The tax line's amount (0: no tax)")
    tax_name = serializers.CharField(help_text="e.g. VAT; empty when no tax applies")
    tax_percent = serializers.DecimalField(max_digits=6, decimal_places=3)
    credits_applied = serializers.DecimalField(max_digits=18, decimal_places=6, help_text="USD of prepaid credits the statement consumes (its credits line)")
    invoice = serializers.SerializerMethodField(help_text="The statement's invoice; null only for a draft")
    credit_note = serializers.SerializerMethodField(help_text="The credit note cancelling a voided statement's invoice")
    lines = LineSerializer(source="lines.all", many=True)

    @extend_schema_field(InvoiceRefSerializer(allow_null=True))
    def get_invoice(self, statement):
        return _invoice_ref(statement, invoice_of(statement), "invoice")

    @extend_schema_field(InvoiceRefSerializer(allow_null=True))
    def get_credit_note(self, statement):
        return _invoice_ref(statement, credit_note_of(statement), "credit-note")


def _invoice_ref(statement, invoice, name: str) -> dict | None:
    if invoice is None:
        return None
    return {"number": invoice.number, "issued_at": invoice.issued_at, "pdf": f"/api/v1/statements/{statement.pk}/{name}.pdf"}


class DraftSerializer(StatementSerializer):
    """Of a billing.drafts.Draft: the same shape as a statement, never stored (no id, no dates)."""

    id = serializers.IntegerField(source="stored_id", allow_null=True)  # a draft has none: null
    status = serializers.SerializerMethodField()
    total = serializers.DecimalField(source="built.total", max_digits=18, decimal_places=6)
    amount_due_cents = serializers.IntegerField(source="built.amount_due_cents")
    carried_forward = serializers.DecimalField(source="built.carried_forward", max_digits=18, decimal_places=6)
    finalized_at = serializers.DateTimeField(source="stored_finalized_at", allow_null=True)
    paid_at = serializers.DateTimeField(source="stored_paid_at", allow_null=True)
    reissue_of = serializers.IntegerField(source="stored_reissue_of", allow_null=True)
    tax = serializers.DecimalField(source="built.tax", max_digits=18, decimal_places=6)
    tax_name = serializers.SerializerMethodField()
    tax_percent = serializers.DecimalField(source="built.tax_rate.percent", max_digits=6, decimal_places=3)
    credits_applied = serializers.DecimalField(source="built.credits_applied", max_digits=18, decimal_places=6)
    lines = LineSerializer(source="built.lines", many=True)

    @extend_schema_field(InvoiceRefSerializer(allow_null=True))
    def get_invoice(self, draft):
        return None

    @extend_schema_field(InvoiceRefSerializer(allow_null=True))
    def get_credit_note(self, draft):
        return None

    @extend_schema_field(OpenApiTypes.STR)
    def get_tax_name(self, draft) -> str:
        return draft.built.tax_rate.name if draft.built.tax else ""

    @extend_schema_field(OpenApiTypes.STR)
    def get_status(self, draft) -> str:
        return "pending" if draft.is_pending else Statement.Status.DRAFT


class StatementListApi(APIView):
    permission_classes = [WorkspaceAccess]
    required_scope = Scope.USAGE_READ

    @extend_schema(operation_id="statements_list", responses={200: StatementSerializer(many=True)})
    def get(self, request):
        statements = (
            Statement.objects.filter(workspace=self.workspace)
            .select_related("plan")
            .prefetch_related("lines", "invoices")
            .order_by("-period", "-pk")
        )
        return Response(StatementSerializer(statements, many=True).data)


class StatementDetailApi(APIView):
    permission_classes = [WorkspaceAccess]
    required_scope = Scope.USAGE_READ

    @extend_schema(operation_id="statements_detail", responses={200: StatementSerializer})
    def get(self, request, statement_id: int):
        statement = (
            Statement.objects.filter(workspace=self.workspace, pk=statement_id)
            .select_related("plan")
            .prefetch_related("lines", "invoices")
            .first()
        )
        if statement is None:
            raise NotFound("No such statement in this workspace.")
        return Response(StatementSerializer(statement).data)


class PreviewSerializer(DraftSerializer):
    """This month's draft, with the pending months before it (a list of drafts, the last one
    this month's, as billing.drafts.statement_preview returns them)."""

    pending = DraftSerializer(many=True, help_text=(
        "Earlier months that are over but not closed yet (between the 1st and the close), oldest "
        "first: what closing each now would bill. This month's draft never bills them again."
    ))

    def to_representation(self, drafts):
        *pending, current = drafts
        return {**DraftSerializer(current).data, "pending": DraftSerializer(pending, many=True).data}


class StatementPreviewApi(APIView):
    permission_classes = [WorkspaceAccess]
    required_scope = Scope.USAGE_READ

    @extend_schema(
        operation_id="statements_preview",
        summary="The current month's draft, as closing now would produce it, and any earlier month still to close",
        responses={200: PreviewSerializer},
    )
    def get(self, request):
        return Response(PreviewSerializer(statement_preview(self.workspace, now=timezone.now())).data)


class PdfRenderer(BaseRenderer):
    """Lets a client ask for `Accept: application/pdf`; errors are still JSON."""

    media_type = "application/pdf"
    format = "pdf"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data if isinstance(data, bytes) else JSONRenderer().render(data)


class _DocumentApi(APIView):
    permission_classes = [WorkspaceAccess]
    required_scope = Scope.USAGE_READ
    renderer_classes = [JSONRenderer, PdfRenderer]
    kind = Invoice.Kind.INVOICE

    def get(self, request, statement_id: int):
        invoice = (
            Invoice.objects.filter(statement__workspace=self.workspace, statement_id=statement_id, kind=self.kind)
            .select_related("statement__workspace", "cancels")
            .first()
        )
        if invoice is None:
            what = "credit note" if self.kind == Invoice.Kind.CREDIT_NOTE else "invoice"
            raise NotFound(f"No {what} for this statement in this workspace.")
        return pdf_response(invoice)


PDF_RESPONSE = {(200, "application/pdf"): OpenApiTypes.BINARY}


class InvoicePdfApi(_DocumentApi):
    @extend_schema(operation_id="statements_invoice_pdf", summary="The statement's invoice as a PDF", responses=PDF_RESPONSE)
    def get(self, request, statement_id: int):
        return super().get(request, statement_id)


class CreditNotePdfApi(_DocumentApi):
    kind = Invoice.Kind.CREDIT_NOTE

    @extend_schema(
        operation_id="statements_credit_note_pdf", summary="The credit note of a voided statement as a PDF", responses=PDF_RESPONSE
    )
    def get(self, request, statement_id: int):
        return super().get(request, statement_id)


class BillingProfileApi(APIView):
    """Reads: usage:read (or a member's session); changes: billing:write (or an owner's/admin's session)."""

    permission_classes = [WorkspaceAccess]

    @property
    def required_scope(self) -> str:
        return Scope.USAGE_READ if self.request.method in SAFE_METHODS else Scope.BILLING_WRITE

    @extend_schema(operation_id="billing_profile_read", summary="Who the invoices are addressed to", responses={200: BillingProfileSerializer})
    def get(self, request):
        return Response(BillingProfileSerializer(billing_profile_of(self.workspace)).data)

    @extend_schema(
        operation_id="billing_profile_replace", summary="Set the billing profile (fields not sent are emptied)",
        request=BillingProfileSerializer, responses={200: BillingProfileSerializer},
    )
    def put(self, request):
        return Response(BillingProfileSerializer(billing_profile_update(self.workspace, request.data)).data)

    @extend_schema(
        operation_id="billing_profile_update", summary="Change the fields sent",
        request=BillingProfileSerializer, responses={200: BillingProfileSerializer},
    )
    def patch(self, request):
        return Response(BillingProfileSerializer(billing_profile_update(self.workspace, request.data, partial=True)).data)

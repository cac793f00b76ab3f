"""Statements API: list, detail and the current month's preview."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from workspaces.access import WorkspaceAccess
from workspaces.models import Scope

from .drafts import statement_preview
from .models import Statement


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
    lines = LineSerializer(source="lines.all", many=True)


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
    lines = LineSerializer(source="built.lines", many=True)

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
            .prefetch_related("lines")
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
            .prefetch_related("lines")
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

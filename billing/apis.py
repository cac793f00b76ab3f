"""Statements API: list, detail and the current month's preview."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from workspaces.access import WorkspaceAccess
from workspaces.models import Scope

from .drafts import statement_preview
from .models import Statement


class LineSerializer(serializers.Serializer):
    kind = serializers.CharField()
    description = serializers.CharField()
    quantity = serializers.IntegerField()
    unit_price = serializers.DecimalField(max_digits=18, decimal_places=6)
    amount = serializers.DecimalField(max_digits=18, decimal_places=6)


class StatementSerializer(serializers.Serializer):
    id = serializers.IntegerField(allow_null=True)
    period = serializers.CharField()
    status = serializers.CharField()
    plan = serializers.CharField(allow_null=True)
    total = serializers.DecimalField(max_digits=18, decimal_places=6)
    amount_due_cents = serializers.IntegerField()
    carried_forward = serializers.DecimalField(max_digits=18, decimal_places=6)
    finalized_at = serializers.DateTimeField(allow_null=True)
    paid_at = serializers.DateTimeField(allow_null=True)
    reissue_of = serializers.IntegerField(allow_null=True)
    lines = LineSerializer(many=True)


def statement_data(statement: Statement) -> dict:
    return {
        "id": statement.pk,
        "period": f"{statement.period:%Y-%m}",
        "status": statement.status,
        "plan": statement.plan.name if statement.plan_id else None,
        "total": statement.total,
        "amount_due_cents": statement.amount_due_cents,
        "carried_forward": statement.carried_forward,
        "finalized_at": statement.finalized_at,
        "paid_at": statement.paid_at,
        "reissue_of": statement.reissue_of_id,
        "lines": list(statement.lines.all()),
    }


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
        return Response(StatementSerializer([statement_data(s) for s in statements], many=True).data)


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
        return Response(StatementSerializer(statement_data(statement)).data)


class PreviewSerializer(StatementSerializer):
    pending = StatementSerializer(many=True, help_text=(
        "Earlier months that are over but not closed yet (between the 1st and the close), oldest "
        "first: what closing each now would bill. This month's draft never bills them again."
    ))


def draft_data(draft) -> dict:
    built = draft.built
    return {
        "id": None,
        "period": f"{draft.period:%Y-%m}",
        "status": "pending" if draft.is_pending else Statement.Status.DRAFT,
        "plan": draft.plan.name,
        "total": built.total,
        "amount_due_cents": built.amount_due_cents,
        "carried_forward": built.carried_forward,
        "finalized_at": None,
        "paid_at": None,
        "reissue_of": None,
        "lines": [line.__dict__ for line in built.lines],
    }


class StatementPreviewApi(APIView):
    permission_classes = [WorkspaceAccess]
    required_scope = Scope.USAGE_READ

    @extend_schema(
        operation_id="statements_preview",
        summary="The current month's draft, as closing now would produce it, and any earlier month still to close",
        responses={200: PreviewSerializer},
    )
    def get(self, request):
        *pending, current = statement_preview(self.workspace, now=timezone.now())
        data = draft_data(current) | {"pending": [draft_data(draft) for draft in pending]}
        return Response(PreviewSerializer(data).data)

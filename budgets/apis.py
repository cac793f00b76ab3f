"""Budgets API: budgets, test alerts, alert history, the forecast and the allowance.

Reads need `usage:read` (or any member's session); writes need `budgets:write` (or an owner's or
admin's session). Everything is scoped to the caller's workspace: another workspace's budget is a
404, as if it did not exist. Answers are serialized from the objects (budgets.serializers); a
service's error (core.errors.ServiceError: a webhook the budget does not have, too many test
alerts) is answered by config.api's handler.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.permissions import SAFE_METHODS
from rest_framework.response import Response
from rest_framework.views import APIView

from core.metrics import ALLOWANCE_ANSWERS
from usage.serializers import DetailErrorSerializer
from workspaces.access import WorkspaceAccess
from workspaces.authentication import ApiKeyAuthentication
from workspaces.models import Scope

from . import serializers
from .evaluation import alert_test_send
from .models import Budget
from .selectors import (
    alert_detail,
    alerts_of,
    allowance_for,
    anomalies_of,
    budgets_of,
    budgets_status,
    workspace_forecast,
)
from .serializers import MAX_ID
from .services import IssuedEndpoint, WebhookSpec, budget_create, budget_delete, budget_update


class _ReadsAndWrites:
    """DRF routes a URL to one view, so GET and POST /budgets share a class: the scope follows
    the method (reads: usage:read; writes: budgets:write, or an owner's/admin's session)."""

    permission_classes = [WorkspaceAccess]

    @property
    def required_scope(self) -> str:
        return Scope.USAGE_READ if self.request.method in SAFE_METHODS else Scope.BUDGETS_WRITE


def _budget_answer(workspace, budget_id: int, issued: Sequence[IssuedEndpoint] = ()) -> dict:
    """The budget as the API shows it, read again (with this month's spend and forecast); the
    secrets of the endpoints this request created (`issued`) appear in this answer only."""
    [status_] = budgets_status([budgets_of(workspace).get(pk=budget_id)])
    return serializers.BudgetSerializer(status_, context={"issued": {item.endpoint.pk: item.secret for item in issued}}).data


CREATE_EXAMPLE = {
    "amount": "100.00",
    "thresholds": [50, 80, 100],
    "forecast_alerts": True,
    "hard_limit": False,
    "api_key": None,
    "email": True,
    "webhooks": [{"url": "https://hooks.example.com/meterboard"}],
}


class BudgetsApi(_ReadsAndWrites, APIView):
    @extend_schema(operation_id="budgets_list", responses={200: serializers.BudgetSerializer(many=True)})
    def get(self, request):
        return Response(serializers.BudgetSerializer(budgets_status(list(budgets_of(self.workspace))), many=True).data)

    @extend_schema(
        operation_id="budgets_create",
        summary="Create a budget (webhook secrets are shown in this answer only)",
        request=serializers.BudgetInputSerializer,
        responses={201: serializers.BudgetSerializer},
        examples=[OpenApiExample("Workspace budget with a webhook", value=CREATE_EXAMPLE, request_only=True)],
    )
    def post(self, request):
        given = serializers.BudgetInputSerializer(data=request.data, context={"workspace": self.workspace})
        given.is_valid(raise_exception=True)
        data = given.validated_data
        budget, issued = budget_create(
            workspace=self.workspace,
            amount=data["amount"],
            thresholds=data["thresholds"],
            forecast_alerts=data["forecast_alerts"],
            hard_limit=data["hard_limit"],
            api_key=data["api_key"],
            email=data["email"],
            webhook_urls=[hook["url"] for hook in data["webhooks"]],
            anomaly_threshold=data["anomaly_threshold"],
        )
        return Response(_budget_answer(self.workspace, budget.pk, issued), status=status.HTTP_201_CREATED)


def _workspace_budget(queryset, budget_id: int) -> Budget:
    """The budget of that id in `queryset`, else 404 (an id beyond 64 bits names nothing, and
    SQLite cannot compare with it)."""
    budget = queryset.filter(pk=budget_id).first() if 0 < budget_id <= MAX_ID else None
    if budget is None:
        raise exceptions.NotFound("No such budget in this workspace.")
    return budget


class BudgetApi(_ReadsAndWrites, APIView):
    def _budget(self, budget_id: int) -> Budget:
        return _workspace_budget(budgets_of(self.workspace), budget_id)

    @extend_schema(operation_id="budgets_detail", responses={200: serializers.BudgetSerializer})
    def get(self, request, budget_id: int):
        [status_] = budgets_status([self._budget(budget_id)])
        return Response(serializers.BudgetSerializer(status_).data)

    @extend_schema(
        operation_id="budgets_update",
        summary="Change a budget; `webhooks`, when sent, is the new list (entries with an id are kept)",
        request=serializers.BudgetInputSerializer(partial=True),
        responses={200: serializers.BudgetSerializer},
    )
    def patch(self, request, budget_id: int):
        budget = self._budget(budget_id)
        given = serializers.BudgetInputSerializer(data=request.data, partial=True, context={"workspace": self.workspace})
        given.is_valid(raise_exception=True)
        changes = dict(given.validated_data)
        hooks = changes.pop("webhooks", None)
        specs = None if hooks is None else [WebhookSpec(url=hook["url"], id=hook.get("id")) for hook in hooks]
        budget, issued = budget_update(budget=budget, changes=changes, webhooks_spec=specs)
        return Response(_budget_answer(self.workspace, budget.pk, issued))

    @extend_schema(operation_id="budgets_delete", responses={204: None})
    def delete(self, request, budget_id: int):
        budget_delete(budget=self._budget(budget_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class BudgetTestAlertApi(APIView):
    permission_classes = [WorkspaceAccess]
    required_scope = Scope.BUDGETS_WRITE

    @extend_schema(
        operation_id="budgets_test_alert",
        summary="Send a test alert through every channel of the budget",
        description="At most BUDGET_TEST_ALERTS_PER_HOUR (10) test alerts an hour per workspace: "
        "past it, 429 with Retry-After (seconds).",
        request=None,
        responses={
            202: serializers.TestAlertSerializer,
            429: OpenApiResponse(
                DetailErrorSerializer, description="Too many test alerts this hour; Retry-After says when to try again"
            ),
        },
    )
    def post(self, request, budget_id: int):
        budget = _workspace_budget(Budget.objects.filter(workspace=self.workspace), budget_id)
        alert = alert_test_send(budget=budget)
        return Response(serializers.TestAlertSerializer({"alert": alert_detail(alert.pk)}).data, status=status.HTTP_202_ACCEPTED)


class AlertsApi(APIView):
    permission_classes = [WorkspaceAccess]
    required_scope = Scope.USAGE_READ

    @extend_schema(
        operation_id="alerts_list",
        summary="Alert history, newest first, with each delivery's status",
        parameters=[serializers.AlertQuerySerializer],
        responses={200: serializers.AlertSerializer(many=True)},
    )
    def get(self, request):
        query = serializers.AlertQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        alerts = alerts_of(self.workspace, budget_id=query.validated_data.get("budget"), limit=query.validated_data["limit"])
        return Response(serializers.AlertSerializer(alerts, many=True).data)


class AnomaliesApi(APIView):
    permission_classes = [WorkspaceAccess]
    required_scope = Scope.USAGE_READ

    @extend_schema(
        operation_id="anomalies_list",
        summary="Spend anomalies: days on which the workspace's or a key's spend was far above its recent history",
        parameters=[serializers.AnomalyQuerySerializer],
        responses={200: serializers.AnomalySerializer(many=True)},
    )
    def get(self, request):
        query = serializers.AnomalyQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        found = anomalies_of(self.workspace, start=query.validated_data["start"], end=query.validated_data["end"])
        return Response(serializers.AnomalySerializer(found, many=True).data)


class ForecastApi(APIView):
    permission_classes = [WorkspaceAccess]
    required_scope = Scope.USAGE_READ

    @extend_schema(operation_id="forecast", summary="Month-to-date spend and the month-end forecast", responses={200: serializers.ForecastSerializer})
    def get(self, request):
        forecast = workspace_forecast(self.workspace, now=timezone.now())
        return Response(serializers.ForecastSerializer(forecast, context={"workspace": self.workspace}).data)


class AllowanceApi(APIView):
    """The generation API asks before doing work: any active key of the workspace may."""

    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [WorkspaceAccess]
    required_scope = (Scope.USAGE_WRITE, Scope.USAGE_READ)

    @extend_schema(operation_id="allowance", summary="May this key still spend this month? (hard limits)", responses={200: serializers.AllowanceSerializer})
    def get(self, request):
        allowance = allowance_for(request.auth)
        ALLOWANCE_ANSWERS.labels("allowed" if allowance.allowed else "denied", allowance.why).inc()
        return Response(serializers.AllowanceSerializer(allowance).data)

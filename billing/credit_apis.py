"""Prepaid credits API: the wallet (usage:read), buying credits and auto-recharge (billing:write,
or an owner's/admin's session)."""

from __future__ import annotations

from decimal import Decimal

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import SAFE_METHODS
from rest_framework.response import Response
from rest_framework.views import APIView

from workspaces.access import WorkspaceAccess
from workspaces.models import Scope

from .auto_recharge import MAX_PER_DAY_LIMIT, auto_recharge_of, auto_recharge_set
from .credit_purchases import PURCHASE_MAX, PURCHASE_MIN, credit_purchase
from .credits import credit_summary
from .models import AutoRecharge

USD = {"max_digits": 18, "decimal_places": 6}


class LotSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    source = serializers.CharField(help_text="grant (staff) or purchase (card)")
    amount = serializers.DecimalField(**USD)
    remaining = serializers.DecimalField(**USD)
    expires_at = serializers.DateTimeField(allow_null=True)
    note = serializers.CharField()
    created_at = serializers.DateTimeField()


class EntrySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    lot = serializers.IntegerField(source="lot_id")
    kind = serializers.CharField(help_text="grant, purchase, consumption, expiry, refund or reversal")
    amount = serializers.DecimalField(**USD, help_text="USD, signed: the balance is the sum of the entries")
    statement = serializers.IntegerField(source="statement_id", allow_null=True)
    note = serializers.CharField()
    created_at = serializers.DateTimeField()


class CreditsSerializer(serializers.Serializer):
    """Of a billing.credits.CreditSummary."""

    currency = serializers.SerializerMethodField()
    balance = serializers.DecimalField(**USD, help_text="The ledger's balance: the sum of every entry")
    available = serializers.DecimalField(**USD, help_text="What the next statement may consume: unexpired lots")
    unbilled_spend = serializers.DecimalField(**USD, help_text="Usage at list price not billed by a statement yet")
    live_balance = serializers.DecimalField(**USD, help_text="available less unbilled_spend, never below 0")
    lots = LotSerializer(many=True)
    entries = EntrySerializer(many=True, help_text="The 50 most recent ledger entries, newest first")

    def get_currency(self, summary) -> str:
        return "USD"  # as the usage, quote and statement answers say it


class PurchaseInputSerializer(serializers.Serializer):
    amount = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=PURCHASE_MIN, max_value=PURCHASE_MAX, help_text="USD")


class PurchaseSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    amount_cents = serializers.IntegerField()
    status = serializers.CharField(help_text="succeeded: the credits are in the wallet; failed; started: not settled yet")
    error = serializers.CharField()
    failure_code = serializers.CharField()
    payment_intent = serializers.CharField(source="payment_intent_id", allow_null=True)
    lot = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    def get_lot(self, purchase) -> int | None:
        lot = getattr(purchase, "lot", None) if purchase.status == "succeeded" else None
        return lot.pk if lot is not None else None


class AutoRechargeSerializer(serializers.Serializer):
    enabled = serializers.BooleanField()
    threshold = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=0, help_text="USD: recharge when the live balance falls below it")
    amount = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=PURCHASE_MIN, max_value=PURCHASE_MAX, help_text="USD bought each time")
    max_per_day = serializers.IntegerField(min_value=1, max_value=MAX_PER_DAY_LIMIT)
    disabled_reason = serializers.CharField(read_only=True, help_text="Why it was turned off (a declined charge): add a new card")


class CreditsApi(APIView):
    permission_classes = [WorkspaceAccess]
    required_scope = Scope.USAGE_READ

    @extend_schema(operation_id="credits_read", summary="The credit wallet: balance, live balance, lots, recent entries", responses={200: CreditsSerializer})
    def get(self, request):
        return Response(CreditsSerializer(credit_summary(self.workspace)).data)


class CreditPurchaseApi(APIView):
    permission_classes = [WorkspaceAccess]
    required_scope = Scope.BILLING_WRITE

    @extend_schema(
        operation_id="credits_purchase", summary="Buy credits with the saved card (5 to 10,000 USD)",
        request=PurchaseInputSerializer, responses={201: PurchaseSerializer},
    )
    def post(self, request):
        given = PurchaseInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        actor = f"api:{request.user}" if getattr(request.user, "is_authenticated", False) else "api"
        purchase = credit_purchase(self.workspace, given.validated_data["amount"], actor=actor)
        purchase.refresh_from_db()
        return Response(PurchaseSerializer(purchase).data, status=status.HTTP_201_CREATED)


class AutoRechargeApi(APIView):
    permission_classes = [WorkspaceAccess]

    @property
    def required_scope(self) -> str:
        return Scope.USAGE_READ if self.request.method in SAFE_METHODS else Scope.BILLING_WRITE

    @extend_schema(operation_id="credits_auto_recharge_read", summary="Auto-recharge settings", responses={200: AutoRechargeSerializer})
    def get(self, request):
        settings = auto_recharge_of(self.workspace) or AutoRecharge(enabled=False, threshold=Decimal(0), amount=Decimal(25), max_per_day=3)
        return Response(AutoRechargeSerializer(settings).data)

    @extend_schema(operation_id="credits_auto_recharge_set", summary="Set auto-recharge", request=AutoRechargeSerializer, responses={200: AutoRechargeSerializer})
    def put(self, request):
        given = AutoRechargeSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        settings = auto_recharge_set(self.workspace, **given.validated_data)
        return Response(AutoRechargeSerializer(settings).data)

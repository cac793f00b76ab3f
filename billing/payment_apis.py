"""Payment API: a SetupIntent for the browser to collect a card, and setting the default card.

Owners and admins (session), or an API key with the billing:write scope.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from workspaces.access import WorkspaceAccess
from workspaces.models import Scope

from .cards import payment_method_set, setup_intent_create


class SetupIntentOutputSerializer(serializers.Serializer):
    client_secret = serializers.CharField(help_text="For Stripe.js confirmCardSetup in the browser")
    setup_intent = serializers.CharField(help_text="The SetupIntent id (seti_…)")


class PaymentMethodInputSerializer(serializers.Serializer):
    payment_method = serializers.RegexField(
        r"^pm_[A-Za-z0-9_]+$",
        max_length=255,
        help_text="The PaymentMethod id the confirmed SetupIntent produced (pm_…)",
        error_messages={"invalid": "A payment method id looks like 'pm_…'."},
    )


class PaymentMethodOutputSerializer(serializers.Serializer):
    """Of a StripeCustomer."""

    payment_method = serializers.CharField(source="default_payment_method", help_text="The workspace's default payment method now")
    customer = serializers.CharField(source="customer_id", help_text="The workspace's Stripe customer (cus_…)")


class SetupIntentCreateApi(APIView):
    permission_classes = [WorkspaceAccess]
    required_scope = Scope.BILLING_WRITE

    @extend_schema(
        operation_id="billing_setup_intent_create",
        summary="Start adding a card: a SetupIntent for Stripe.js",
        request=None,
        responses={201: SetupIntentOutputSerializer},
    )
    def post(self, request):
        created = setup_intent_create(self.workspace)  # PaymentsUnavailable: 503 (core.errors)
        return Response(SetupIntentOutputSerializer(created).data, status=status.HTTP_201_CREATED)


class PaymentMethodSetApi(APIView):
    permission_classes = [WorkspaceAccess]
    required_scope = Scope.BILLING_WRITE

    @extend_schema(
        operation_id="billing_payment_method_set",
        summary="Make a card the workspace's default; retries payment-failed statements",
        request=PaymentMethodInputSerializer,
        responses={200: PaymentMethodOutputSerializer},
    )
    def post(self, request):
        given = PaymentMethodInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        # PaymentMethodRejected: 400 on the field; PaymentsUnavailable: 503 (core.errors)
        customer = payment_method_set(self.workspace, given.validated_data["payment_method"])
        return Response(PaymentMethodOutputSerializer(customer).data)

from django.urls import path

from . import payment_apis

urlpatterns = [
    path("setup-intent", payment_apis.SetupIntentCreateApi.as_view(), name="billing-setup-intent"),
    path("payment-method", payment_apis.PaymentMethodSetApi.as_view(), name="billing-payment-method"),
]

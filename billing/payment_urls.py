from django.urls import path

from . import apis, payment_apis

urlpatterns = [
    path("profile", apis.BillingProfileApi.as_view(), name="billing-profile"),
    path("setup-intent", payment_apis.SetupIntentCreateApi.as_view(), name="billing-setup-intent"),
    path("payment-method", payment_apis.PaymentMethodSetApi.as_view(), name="billing-payment-method"),
]

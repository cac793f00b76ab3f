from django.urls import path

from . import apis, credit_apis

urlpatterns = [
    path("statements", apis.StatementListApi.as_view(), name="statements-list"),
    path("statements/preview", apis.StatementPreviewApi.as_view(), name="statements-preview"),
    path("statements/<int:statement_id>", apis.StatementDetailApi.as_view(), name="statements-detail"),
    path("statements/<int:statement_id>/invoice.pdf", apis.InvoicePdfApi.as_view(), name="statements-invoice-pdf"),
    path("statements/<int:statement_id>/credit-note.pdf", apis.CreditNotePdfApi.as_view(), name="statements-credit-note-pdf"),
    path("credits", credit_apis.CreditsApi.as_view(), name="credits"),
    path("credits/purchase", credit_apis.CreditPurchaseApi.as_view(), name="credits-purchase"),
    path("credits/auto-recharge", credit_apis.AutoRechargeApi.as_view(), name="credits-auto-recharge"),
]

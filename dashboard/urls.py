from django.urls import path

from .views import billing_details, budgets, credits, keys, members, overview, payment, staff, statements, usage

app_name = "dashboard"
urlpatterns = [
    path("", overview.overview, name="overview"),
    path("usage/", usage.usage_events, name="usage"),
    path("usage/rollups/", usage.usage_rollups, name="usage-rollups"),
    path("usage/export.csv", usage.usage_export, name="usage-export"),
    path("statements/", statements.statements, name="statements"),
    path("statements/preview/", statements.statement_preview, name="statement-preview"),
    path("statements/<int:statement_id>/", statements.statement_detail, name="statement"),
    path("statements/<int:statement_id>/print/", statements.statement_print, name="statement-print"),
    path("statements/<int:statement_id>.csv", statements.statement_csv, name="statement-csv"),
    path("statements/<int:statement_id>/retry/", statements.statement_retry, name="statement-retry"),
    path("budgets/", budgets.budgets, name="budgets"),
    path("budgets/new/", budgets.budget_create, name="budget-create"),
    path("budgets/<int:budget_id>/", budgets.budget_edit, name="budget-edit"),
    path("budgets/<int:budget_id>/save/", budgets.budget_update, name="budget-update"),
    path("budgets/<int:budget_id>/delete/", budgets.budget_delete, name="budget-delete"),
    path("budgets/<int:budget_id>/test-alert/", budgets.budget_test_alert, name="budget-test-alert"),
    path("keys/", keys.keys, name="keys"),
    path("keys/create/", keys.key_create, name="key-create"),
    path("keys/<int:key_id>/revoke/", keys.key_revoke, name="key-revoke"),
    path("members/", members.members, name="members"),
    path("members/add/", members.member_add, name="member-add"),
    path("members/<int:membership_id>/role/", members.member_role, name="member-role"),
    path("members/<int:membership_id>/remove/", members.member_delete, name="member-remove"),
    path("payment/", payment.payment, name="payment"),
    path("credits/", credits.credits, name="credits"),
    path("credits/buy/", credits.credits_buy, name="credits-buy"),
    path("credits/auto-recharge/", credits.credits_auto_recharge, name="credits-auto-recharge"),
    path("billing-details/", billing_details.billing_details, name="billing-details"),
    path("billing-details/save/", billing_details.billing_details_save, name="billing-details-save"),
    path("statements/<int:statement_id>/invoice.pdf", statements.statement_invoice_pdf, name="statement-invoice-pdf"),
    path("statements/<int:statement_id>/credit-note.pdf", statements.statement_credit_note_pdf, name="statement-credit-note-pdf"),
    path("staff/", staff.staff, name="staff"),
]

from django.urls import path

from . import views

app_name = "dashboard"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("usage/", views.usage_events, name="usage"),
    path("usage/rollups/", views.usage_rollups, name="usage-rollups"),
    path("usage/export.csv", views.usage_export, name="usage-export"),
    path("statements/", views.statements, name="statements"),
    path("statements/preview/", views.statement_preview, name="statement-preview"),
    path("statements/<int:statement_id>/", views.statement_detail, name="statement"),
    path("statements/<int:statement_id>/print/", views.statement_print, name="statement-print"),
    path("statements/<int:statement_id>.csv", views.statement_csv, name="statement-csv"),
    path("statements/<int:statement_id>/retry/", views.statement_retry, name="statement-retry"),
    path("budgets/", views.budgets, name="budgets"),
    path("budgets/new/", views.budget_create, name="budget-create"),
    path("budgets/<int:budget_id>/", views.budget_edit, name="budget-edit"),
    path("budgets/<int:budget_id>/save/", views.budget_update, name="budget-update"),
    path("budgets/<int:budget_id>/delete/", views.budget_delete, name="budget-delete"),
    path("budgets/<int:budget_id>/test-alert/", views.budget_test_alert, name="budget-test-alert"),
    path("keys/", views.keys, name="keys"),
    path("keys/create/", views.key_create, name="key-create"),
    path("keys/<int:key_id>/revoke/", views.key_revoke, name="key-revoke"),
    path("members/", views.members, name="members"),
    path("members/add/", views.member_add, name="member-add"),
    path("members/<int:membership_id>/role/", views.member_role, name="member-role"),
    path("members/<int:membership_id>/remove/", views.member_delete, name="member-remove"),
    path("payment/", views.payment, name="payment"),
    path("staff/", views.staff, name="staff"),
]

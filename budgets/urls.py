from django.urls import path

from . import apis

urlpatterns = [
    path("budgets", apis.BudgetsApi.as_view(), name="budgets"),
    path("budgets/<int:budget_id>", apis.BudgetApi.as_view(), name="budget"),
    path("budgets/<int:budget_id>/test-alert", apis.BudgetTestAlertApi.as_view(), name="budget-test-alert"),
    path("alerts", apis.AlertsApi.as_view(), name="alerts"),
    path("anomalies", apis.AnomaliesApi.as_view(), name="anomalies"),
    path("forecast", apis.ForecastApi.as_view(), name="forecast"),
    path("allowance", apis.AllowanceApi.as_view(), name="allowance"),
]

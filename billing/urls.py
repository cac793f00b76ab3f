from django.urls import path

from . import apis

urlpatterns = [
    path("statements", apis.StatementListApi.as_view(), name="statements-list"),
    path("statements/preview", apis.StatementPreviewApi.as_view(), name="statements-preview"),
    path("statements/<int:statement_id>", apis.StatementDetailApi.as_view(), name="statements-detail"),
]

from django.urls import path

from . import apis

urlpatterns = [
    path("events", apis.EventIngestApi.as_view(), name="events-ingest"),
    path("quote", apis.QuoteApi.as_view(), name="quote"),
    path("usage", apis.UsageApi.as_view(), name="usage"),
]

from django.urls import path

from . import apis

urlpatterns = [
    path("webhook-endpoints", apis.EndpointsApi.as_view(), name="webhook-endpoints"),
    path("webhook-endpoints/<int:endpoint_id>", apis.EndpointApi.as_view(), name="webhook-endpoint"),
    path("events-log", apis.EventsLogApi.as_view(), name="events-log"),
    path("events/<str:event_id>", apis.EventApi.as_view(), name="event"),
    path("events/<str:event_id>/replay", apis.EventReplayApi.as_view(), name="event-replay"),
    path("event-types", apis.EventTypesApi.as_view(), name="event-types"),
]

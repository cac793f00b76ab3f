"""The event stream's API: webhook endpoints, the events log, one event with its deliveries and
its replay to an endpoint, the event types.

Reads need `usage:read` (or any member's session); writes need `budgets:write` (or an owner's or
admin's session). Everything is scoped to the caller's workspace: another workspace's endpoint
or event is a 404. A service's error (an URL refused, an unknown type) is answered 400 per field."""

from __future__ import annotations

import re

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.permissions import SAFE_METHODS
from rest_framework.response import Response
from rest_framework.views import APIView

from workspaces.access import WorkspaceAccess
from workspaces.models import Scope

from . import serializers
from .retention import is_past_retention, retention_days
from .schemas import event_types_list
from .selectors import endpoints_of, event_of, event_with_deliveries, events_log
from .services import endpoint_create, endpoint_delete, endpoint_update, event_replay

_EVENT_ID = re.compile(r"evt_[0-9A-Z]{26}")


class _ReadsAndWrites:
    """Reads: usage:read; writes: budgets:write, or an owner's/admin's session."""

    permission_classes = [WorkspaceAccess]

    @property
    def required_scope(self) -> str:
        return Scope.USAGE_READ if self.request.method in SAFE_METHODS else Scope.BUDGETS_WRITE


class EndpointsApi(_ReadsAndWrites, APIView):
    @extend_schema(operation_id="webhook_endpoints_list", responses={200: serializers.EndpointSerializer(many=True)})
    def get(self, request):
        return Response(serializers.EndpointSerializer(endpoints_of(self.workspace.pk), many=True).data)

    @extend_schema(
        operation_id="webhook_endpoints_create",
        summary="Add a webhook endpoint for the workspace's events (its secret is in this answer only)",
        request=serializers.EndpointInputSerializer,
        responses={201: serializers.EndpointSerializer},
    )
    def post(self, request):
        given = serializers.EndpointInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        issued = endpoint_create(workspace_id=self.workspace.pk, **given.validated_data)
        answer = serializers.EndpointSerializer(issued.endpoint, context={"secrets": {issued.endpoint.pk: issued.secret}})
        return Response(answer.data, status=status.HTTP_201_CREATED)


class EndpointApi(_ReadsAndWrites, APIView):
    def _endpoint(self, endpoint_id: int):
        found = endpoints_of(self.workspace.pk).filter(pk=endpoint_id).first() if 0 < endpoint_id <= serializers.MAX_ID else None
        if found is None:
            raise exceptions.NotFound("No such webhook endpoint in this workspace.")
        return found

    @extend_schema(operation_id="webhook_endpoints_detail", responses={200: serializers.EndpointSerializer})
    def get(self, request, endpoint_id: int):
        return Response(serializers.EndpointSerializer(self._endpoint(endpoint_id)).data)

    @extend_schema(
        operation_id="webhook_endpoints_update",
        request=serializers.EndpointInputSerializer(partial=True),
        responses={200: serializers.EndpointSerializer},
    )
    def patch(self, request, endpoint_id: int):
        endpoint = self._endpoint(endpoint_id)
        given = serializers.EndpointInputSerializer(data=request.data, partial=True)
        given.is_valid(raise_exception=True)
        return Response(serializers.EndpointSerializer(endpoint_update(endpoint, changes=dict(given.validated_data))).data)

    @extend_schema(operation_id="webhook_endpoints_delete", responses={204: None})
    def delete(self, request, endpoint_id: int):
        endpoint_delete(self._endpoint(endpoint_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class EventsLogApi(APIView):
    permission_classes = [WorkspaceAccess]
    required_scope = Scope.USAGE_READ

    @extend_schema(
        operation_id="events_log",
        summary="The workspace's events in created order, after a cursor: poll instead of a webhook",
        parameters=[serializers.EventsLogQuerySerializer],
        responses={200: serializers.EventsLogSerializer},
    )
    def get(self, request):
        query = serializers.EventsLogQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        given = query.validated_data
        after = None
        if "after" in given:
            after = event_of(self.workspace.pk, given["after"])
            if after is None:
                raise exceptions.ValidationError({"after": [_cursor_lost(given["after"])]})
        page = events_log(self.workspace.pk, after=after, types=given.get("type", ()), limit=given["limit"])
        last = page.events[-1].pk if page.events else given.get("after")
        return Response(
            serializers.EventsLogSerializer(
                {"data": [event.payload() for event in page.events], "has_more": page.has_more, "next_after": last}
            ).data
        )


def _cursor_lost(event_id: str) -> str:
    """Why a cursor cannot be followed. Its event may have been deleted by retention: the id's own
    time says so (whatever the workspace), and the poller must start again, knowing it missed what
    was deleted. Continuing from that time instead would hide the gap."""
    if is_past_retention(event_id):
        return f"This event is older than the {retention_days()}-day retention; start again without after."
    return "No such event in this workspace."


def _event_not_found() -> exceptions.NotFound:
    return exceptions.NotFound(f"No such event in this workspace (events are kept {retention_days()} days).")


class EventApi(APIView):
    permission_classes = [WorkspaceAccess]
    required_scope = Scope.USAGE_READ

    @extend_schema(
        operation_id="events_detail",
        summary="One event as receivers get it, with each endpoint's delivery of it and its status",
        responses={200: serializers.EventDetailSerializer},
    )
    def get(self, request, event_id: str):
        event = event_with_deliveries(self.workspace.pk, event_id) if _EVENT_ID.fullmatch(event_id) else None
        if event is None:
            raise _event_not_found()
        answer = {**event.payload(), "deliveries": list(event.deliveries.all())}
        return Response(serializers.EventDetailSerializer(answer).data)


class EventReplayApi(_ReadsAndWrites, APIView):
    @extend_schema(
        operation_id="events_replay",
        summary="Send an event again to one active endpoint of the workspace, after what it has queued",
        request=serializers.EventReplayInputSerializer,
        responses={202: serializers.EventDeliverySerializer},
    )
    def post(self, request, event_id: str):
        event = event_of(self.workspace.pk, event_id) if _EVENT_ID.fullmatch(event_id) else None
        if event is None:
            raise _event_not_found()
        given = serializers.EventReplayInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        endpoint = endpoints_of(self.workspace.pk).filter(pk=given.validated_data["endpoint"]).first()
        if endpoint is None:
            raise exceptions.ValidationError({"endpoint": ["No such webhook endpoint in this workspace."]})
        delivery = event_replay(event, endpoint)
        return Response(serializers.EventDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


class EventTypesApi(APIView):
    permission_classes = [WorkspaceAccess]
    required_scope = Scope.USAGE_READ

    @extend_schema(
        operation_id="event_types_list",
        summary="Every event type and version with the JSON schema of its data",
        responses={200: serializers.EventTypeSerializer(many=True)},
    )
    def get(self, request):
        return Response(serializers.EventTypeSerializer(event_types_list(), many=True).data)

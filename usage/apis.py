"""Usage API: POST /events, POST /quote, GET /usage."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api import PayloadTooLarge
from workspaces.access import WorkspaceAccess
from workspaces.authentication import ApiKeyAuthentication
from workspaces.models import Scope

from . import serializers
from .parsers import StrictJSONParser, json_body
from .selectors import usage_summary
from .services import MAX_BATCH, events_ingest, quote_event


def _errors(bad_request: OpenApiResponse) -> dict:
    """The error answers of an ingestion endpoint, for the schema: each body is {"detail": ...},
    but a 400's may differ."""
    detail = serializers.DetailErrorSerializer
    return {
        400: bad_request,
        401: OpenApiResponse(detail, description="No API key, or an unknown or revoked one (WWW-Authenticate: Bearer)"),
        403: OpenApiResponse(detail, description="The key lacks the endpoint's scope"),
        413: OpenApiResponse(
            detail, description="More than 1,000 events, or a body over the size limit (MB_MAX_BODY_BYTES, 8 MB)"
        ),
        415: OpenApiResponse(detail, description="The body is not declared 'Content-Type: application/json'"),
        429: OpenApiResponse(detail, description="Too many requests; Retry-After says when to try again"),
    }


_BODY_400 = (
    "The body as a whole cannot be read, nothing is stored: empty, not UTF-8 JSON, NaN/Infinity, a number "
    "out of range, nested more than 32 deep, a key twice in one object, or not an event / list / "
    '{"events": [...]} of 1 to 1,000 events'
)


_QUOTE_400 = (
    "Either the body as a whole cannot be read ({\"detail\": ...}: empty, not UTF-8 JSON, NaN/Infinity, a "
    "number out of range, nested more than 32 deep, a key twice in one object), or the event is invalid "
    "(its field errors: {\"field\": [\"message\", ...]})"
)


class EventIngestApi(APIView):
    """Bodies are read by usage.parsers (strict JSON: 415, 413, or 400 for the body as a whole);
    each event is then validated on its own, so that one bad event is that item's `rejected`."""

    parser_classes = [StrictJSONParser]
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [WorkspaceAccess]
    required_scope = Scope.USAGE_WRITE

    @extend_schema(
        operation_id="events_ingest",
        summary="Report usage events (one, or a batch of up to 1,000)",
        request=serializers.EventBatchSerializer,
        responses={200: serializers.IngestResponseSerializer, **_errors(OpenApiResponse(serializers.DetailErrorSerializer, _BODY_400))},
        examples=[
            OpenApiExample(
                "One SDXL image",
                value={
                    "event_id": "gen-7f3a",
                    "occurred_at": "2026-11-25T10:00:00Z",
                    "feature": "generation",
                    "model": "sdxl",
                    "steps": 50,
                    "width": 1024,
                    "height": 1824,
                },
                request_only=True,
            )
        ],
    )
    def post(self, request):
        body = json_body(request)
        if isinstance(body, dict) and "events" in body:
            if set(body) != {"events"}:
                raise exceptions.ParseError("A batch is {\"events\": [...]} with no other keys.")
            raw_events = body["events"]
            if not isinstance(raw_events, list):
                raise exceptions.ParseError("'events' must be a list of event objects.")
        elif isinstance(body, dict):
            raw_events = [body]
        elif isinstance(body, list):
            raw_events = body
        else:
            raise exceptions.ParseError("Send a JSON event object, a list of events, or {\"events\": [...]}.")
        if not raw_events:
            raise exceptions.ParseError("The batch is empty: send 1 to 1,000 events.")
        if len(raw_events) > MAX_BATCH:
            raise PayloadTooLarge(f"{len(raw_events):,} events in one request; send at most {MAX_BATCH:,}.")

        outcome = events_ingest(workspace=self.workspace, api_key=request.auth, raw_events=raw_events)
        return Response(serializers.IngestResponseSerializer(outcome).data)


class QuoteApi(APIView):
    parser_classes = [StrictJSONParser]
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [WorkspaceAccess]
    required_scope = (Scope.USAGE_WRITE, Scope.USAGE_READ)

    @extend_schema(
        operation_id="quote",
        summary="Price an event without recording it",
        request=serializers.QuoteRequestSerializer,
        responses={
            200: serializers.QuoteSerializer,
            **_errors(OpenApiResponse(serializers.QUOTE_400_SCHEMA, _QUOTE_400)),
        },
    )
    def post(self, request):
        # An invalid event: EventInvalid, answered 400 with its field errors (core.errors).
        return Response(serializers.QuoteSerializer(quote_event(json_body(request))).data)


class UsageApi(APIView):
    permission_classes = [WorkspaceAccess]
    required_scope = Scope.USAGE_READ

    @extend_schema(
        operation_id="usage",
        summary="Quantity and spend over UTC days, grouped by any dimensions",
        parameters=[serializers.UsageQuerySerializer],
        responses={200: serializers.UsageResponseSerializer},
    )
    def get(self, request):
        query = serializers.UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        summary = usage_summary(
            workspace=self.workspace, start=params["start"], end=params["end"], group_by=params["group_by"]
        )
        return Response(serializers.UsageResponseSerializer(summary, context={"workspace": self.workspace, "params": params}).data)

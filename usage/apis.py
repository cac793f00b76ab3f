"""Usage API: POST /events, POST /quote, GET /usage."""

from __future__ import annotations

import functools
import time

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api import PayloadTooLarge, exception_handler
from core.metrics import INGEST_SECONDS
from core.replicas import PIN_COOKIE, reading_from_replica
from workspaces.access import WorkspaceAccess
from workspaces.authentication import ApiKeyAuthentication
from workspaces.models import Scope
from workspaces.services import api_key_authenticate
from workspaces.throttling import ApiKeyThrottle

from . import serializers
from .parsers import StrictJSONParser, _is_json_media_type, json_body, loads
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
        raw_events = events_of(json_body(request))
        outcome = events_ingest(workspace=self.workspace, api_key=request.auth, raw_events=raw_events)
        return Response(serializers.IngestResponseSerializer(outcome).data)

    @classmethod
    def as_view(cls, **initkwargs):
        """The DRF view behind a fast path for the common call (`fast_ingest`); the wrapper keeps
        the view's attributes (`cls` for the OpenAPI schema, `csrf_exempt`) and times every answer,
        either view's (meterboard_ingest_request_duration_seconds)."""
        drf_view = super().as_view(**initkwargs)

        @functools.wraps(drf_view)
        def view(request, *args, **kwargs):
            started = time.perf_counter()
            try:
                response = fast_ingest(request)
                return drf_view(request, *args, **kwargs) if response is None else response
            finally:
                INGEST_SECONDS.observe(time.perf_counter() - started)

        view.drf_view = drf_view
        return view


def events_of(body) -> list:
    """The events of a body: one event, a list, or {"events": [...]}, 1 to MAX_BATCH of them."""
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
    return raw_events


_ALLOW = "POST, OPTIONS"  # what DRF's view says of itself
_RENDERER = JSONRenderer()
_ACCEPTED = frozenset({"", "*/*", "application/json", "application/*"})


def fast_ingest(request) -> HttpResponse | None:
    """POST /api/v1/events without DRF's dispatch, for the call that needs none of it (issue 12:
    DRF's request, negotiation, authentication, permission and throttle objects and renderer were
    a fifth of a single-event request's instructions). Answers only a POST with a Bearer key that
    has the usage:write scope, a Content-Length and a JSON body that parses into 1 to 1,000
    events, within the key's rate; anything else returns None before any effect, and the DRF
    view answers it (errors included), as it answers everything else. The throttle's outcome is
    left on the request for the DRF view's throttle, so a call is never counted twice. What this
    writes is what DRF would: JSONRenderer's compact JSON, `Allow`, and errors raised while storing
    through the API's exception handler (a test compares the two views answer by answer)."""
    meta = request.META
    if request.method != "POST" or meta.get("HTTP_ACCEPT", "").strip() not in _ACCEPTED:
        return None
    keyword, _, secret = meta.get("HTTP_AUTHORIZATION", "").partition(" ")
    secret = secret.strip()
    if keyword.lower() != "bearer" or not secret or not meta.get("CONTENT_LENGTH"):
        return None
    if not _is_json_media_type(request) or "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower():
        return None
    api_key = api_key_authenticate(secret)
    if api_key is None or not api_key.has_scope(Scope.USAGE_WRITE):
        return None
    if not ApiKeyThrottle.record(request, api_key):
        return None  # the DRF view answers 429, with the wait recorded
    try:
        raw_events = events_of(loads(request.body))
    except Exception:  # noqa: BLE001 (a body error, RequestDataTooBig…: the DRF view answers them)
        return None
    try:
        outcome = events_ingest(workspace=api_key.workspace, api_key=api_key, raw_events=raw_events)
        data, status = serializers.IngestResponseSerializer(outcome).data, 200
    except Exception as exc:
        answer = exception_handler(exc, {"request": request})
        if answer is None:
            raise
        data, status = answer.data, answer.status_code
        response = _json_response(data, status)
        for name, value in answer.items():  # Retry-After; the content type is the renderer's
            if name.lower() != "content-type":
                response[name] = value
        return response
    return _json_response(data, status)


def _json_response(data, status: int) -> HttpResponse:
    """Written by DRF's JSONRenderer, as the view would, with the view's Allow."""
    response = HttpResponse(_RENDERER.render(data), status=status, content_type="application/json")
    response["Allow"] = _ALLOW
    return response


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
        with reading_from_replica(allowed=PIN_COOKIE not in request.COOKIES):  # core.replicas
            return self._usage(request)

    def _usage(self, request):
        query = serializers.UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        summary = usage_summary(
            workspace=self.workspace, start=params["start"], end=params["end"], group_by=params["group_by"]
        )
        return Response(serializers.UsageResponseSerializer(summary, context={"workspace": self.workspace, "params": params}).data)

"""The events page: the workspace's recent events with each endpoint's delivery status and the
payload, a replay of one event to one endpoint, and the workspace's webhook endpoints (created
with their secret shown once, deleted)."""

from __future__ import annotations

import json

from django import forms
from django.contrib import messages
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET, require_POST

from notifications import services as stream
from notifications.models import ALL_TYPES, Endpoint, Event
from notifications.retention import retention_days
from notifications.schemas import EVENT_TYPES
from notifications.selectors import endpoints_of, recent_events

from ..access import MANAGE, back, workspace_page

RECENT = 50


class EndpointForm(forms.Form):
    url = forms.CharField(max_length=2000, label="URL", help_text="https://… ; it receives each event as a signed POST")
    event_types = forms.MultipleChoiceField(
        choices=[(ALL_TYPES, "All types")] + [(t, t) for t in EVENT_TYPES], initial=[ALL_TYPES],
        widget=forms.CheckboxSelectMultiple, label="Event types",
    )  # fmt: skip
    description = forms.CharField(max_length=200, required=False)


def _events_page(request, form: EndpointForm, *, issued=None, status: int = 200):
    workspace = request.access.workspace
    event_type = request.GET.get("type") if request.GET.get("type") in EVENT_TYPES else None
    events = recent_events(workspace.pk, limit=RECENT, event_type=event_type)
    response = render(
        request,
        "dashboard/events.html",
        {
            "events": [(event, json.dumps(event.payload(), indent=2)) for event in events],
            "endpoints": endpoints_of(workspace.pk),
            "event_types": EVENT_TYPES,
            "event_type": event_type,
            "form": form,
            "issued": issued,
            "retention_days": retention_days(),
        },
        status=status,
    )
    if issued is not None:
        response["Cache-Control"] = "no-store"  # the secret is in this page, once
    return response


@require_GET
@workspace_page()
def events(request):
    return _events_page(request, EndpointForm())


@require_POST
@workspace_page(MANAGE)
def event_endpoint_create(request):
    form = EndpointForm(request.POST)
    if form.is_valid():
        try:
            issued = stream.endpoint_create(
                workspace_id=request.access.workspace.pk, url=form.cleaned_data["url"],
                event_types=form.cleaned_data["event_types"], description=form.cleaned_data["description"],
            )  # fmt: skip
        except stream.EndpointInvalid as exc:
            form.add_error(exc.field if exc.field in form.fields else None, str(exc))
        else:
            return _events_page(request, EndpointForm(), issued=issued)
    return _events_page(request, form, status=400)


@require_POST
@workspace_page(MANAGE)
def event_endpoint_delete(request, endpoint_id: int):
    endpoint = get_object_or_404(Endpoint, pk=endpoint_id, workspace=request.access.workspace)
    stream.endpoint_delete(endpoint)
    messages.success(request, f"Deleted the endpoint {endpoint.url}: it receives no more events.")
    return back(request, "dashboard:events")


@require_POST
@workspace_page(MANAGE)
def event_replay(request, event_id: str):
    event = get_object_or_404(Event, pk=event_id, workspace=request.access.workspace)
    endpoint_id = request.POST.get("endpoint", "")
    pk = int(endpoint_id) if endpoint_id.isdigit() and len(endpoint_id) < 19 else 0  # a bigint, or none
    endpoint = get_object_or_404(Endpoint, pk=pk, workspace=request.access.workspace)
    try:
        stream.event_replay(event, endpoint)
    except (stream.EndpointInvalid, stream.EventGone) as exc:  # a paused endpoint; an event past the retention
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{event.id} will be sent again to {endpoint.url}, after what it has queued.")
    return back(request, "dashboard:events")

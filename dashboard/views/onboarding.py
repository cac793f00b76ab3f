"""The "Get started" checklist's two endpoints: creating a first key from the overview (its secret
shown once, there, filled into the first request), and the live panel's poll of the latest events."""

from __future__ import annotations

from django.http import JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from workspaces.services import api_key_create

from ..access import MANAGE, workspace_page
from ..forms import ApiKeyCreateForm
from ..selectors.onboarding import latest_events, onboarding_of
from .overview import overview_context

FIRST_KEY_NAME = "First key"


@require_POST
@workspace_page(MANAGE)
def onboarding_key_create(request):
    """The keys page's form (same validation), answered with the overview: the checklist then shows
    the secret and the first request with it filled in, in this one response."""
    form = ApiKeyCreateForm(
        {
            "name": request.POST.get("name") or FIRST_KEY_NAME,
            "scopes": request.POST.getlist("scopes") or ["usage:write", "usage:read"],
        }
    )
    if not form.is_valid():
        context = overview_context(request)
        context["key_errors"] = form.errors
        return render(request, "dashboard/overview.html", context, status=400)
    issued = api_key_create(
        workspace=request.access.workspace, name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"]
    )
    response = render(request, "dashboard/overview.html", overview_context(request, issued=issued))
    response["Cache-Control"] = "no-store"  # the secret is in this page, once
    return response


@require_GET
@workspace_page()
def onboarding_events(request):
    """The live panel's poll (every 2 s): the steps' states and the workspace's latest events."""
    workspace = request.access.workspace
    steps = onboarding_of(workspace)
    events = latest_events(workspace, now=timezone.now())
    response = JsonResponse(
        {
            "steps": {
                "key": steps.has_key,
                "events": steps.has_events,
                "budget": steps.has_budget,
                "card": steps.has_card,
            },
            "events": [
                {
                    "event_id": e.event_id,
                    "received_at": e.received_at.isoformat(),
                    # The panel shows it as every page shows a time: the workspace's, UTC on hover.
                    "received_at_local": timezone.localtime(e.received_at).strftime("%H:%M:%S"),
                    "feature": e.feature,
                    "model": e.model,
                    "quantity": e.quantity,
                    "amount": str(e.amount),  # USD, 6 dp, a string: never a float
                }
                for e in events
            ],
        }
    )
    response["Cache-Control"] = "no-store"
    return response

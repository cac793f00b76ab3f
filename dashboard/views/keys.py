"""The API keys page: the workspace's keys, issuing one (its secret shown once), revoking one."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET, require_POST

from workspaces.models import ApiKey
from workspaces.services import api_key_create, api_key_revoke

from ..access import MANAGE, back, workspace_page
from ..forms import ApiKeyCreateForm
from ..selectors.keys import api_keys_of


def _keys_page(request, form: ApiKeyCreateForm, *, issued=None, status: int = 200):
    response = render(
        request,
        "dashboard/keys.html",
        {"keys": api_keys_of(request.access.workspace), "form": form, "issued": issued},
        status=status,
    )
    if issued is not None:
        response["Cache-Control"] = "no-store"  # the secret is in this page, once
    return response


@require_GET
@workspace_page()
def keys(request):
    return _keys_page(request, ApiKeyCreateForm())


@require_POST
@workspace_page(MANAGE)
def key_create(request):
    form = ApiKeyCreateForm(request.POST)
    if not form.is_valid():
        return _keys_page(request, form, status=400)
    issued = api_key_create(workspace=request.access.workspace, name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"])
    return _keys_page(request, ApiKeyCreateForm(), issued=issued)


@require_POST
@workspace_page(MANAGE)
def key_revoke(request, key_id: int):
    key = get_object_or_404(ApiKey, pk=key_id, workspace=request.access.workspace)
    api_key_revoke(api_key=key)
    messages.success(request, f"Revoked “{key.name}” ({key.display_prefix}): it is refused from its next request on.")
    return back(request, "dashboard:keys")

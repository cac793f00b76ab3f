"""The API keys page's read."""

from __future__ import annotations

from workspaces.models import ApiKey, Workspace


def api_keys_of(workspace: Workspace) -> list[ApiKey]:
    """Active keys first (newest first), then revoked ones."""
    keys = list(ApiKey.objects.filter(workspace=workspace).order_by("-created_at", "-pk"))
    return [k for k in keys if k.revoked_at is None] + [k for k in keys if k.revoked_at is not None]

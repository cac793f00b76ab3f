"""Who may touch which workspace: one permission class for every workspace-scoped API view.

A view names the scope it needs (`required_scope = Scope.USAGE_READ`, or a tuple: any of them). An API key may act only
on its own workspace and only within its scopes. A signed-in person acts on a workspace they are
a member of, named by `?workspace=<slug>` (optional when they belong to exactly one); writes
other than reporting usage need the owner or admin role. Staff may read every workspace.
The resolved workspace is put on the view as `view.workspace`.
"""

from __future__ import annotations

import re

from rest_framework import exceptions, permissions

from .models import ApiKey, Membership, Scope, Workspace

READ_SCOPES = {Scope.USAGE_READ}

SLUG_MAX_LENGTH = Workspace._meta.get_field("slug").max_length
_SLUG = re.compile(r"[-a-zA-Z0-9_]+")
SLUG_MESSAGE = f"Not a workspace slug: letters, digits, '-' and '_', at most {SLUG_MAX_LENGTH} characters."


def slug_is_valid(slug: str) -> bool:
    """Whether `?workspace=` could name a workspace at all. Anything else (a NUL, which PostgreSQL
    refuses in a query, 5,000 characters, non-ASCII) is a 400 before any database lookup."""
    return len(slug) <= SLUG_MAX_LENGTH and _SLUG.fullmatch(slug) is not None


class WorkspaceAccess(permissions.BasePermission):
    def has_permission(self, request, view) -> bool:
        scopes = view.required_scope
        scopes = (scopes,) if isinstance(scopes, str) else tuple(scopes)
        if isinstance(request.auth, ApiKey):
            if not any(request.auth.has_scope(scope) for scope in scopes):
                raise exceptions.PermissionDenied(
                    f"This API key lacks the {' or '.join(repr(str(s)) for s in scopes)} scope."
                )
            view.workspace = request.auth.workspace
            return True
        user = request.user
        if not user or not user.is_authenticated:
            return False
        view.workspace = self._session_workspace(request, user, reads_only=set(scopes) <= READ_SCOPES)
        return True

    def _session_workspace(self, request, user, *, reads_only: bool) -> Workspace:
        slug = request.query_params.get("workspace")
        memberships = Membership.objects.select_related("workspace").filter(user=user)
        if slug and not slug_is_valid(slug):
            raise exceptions.ValidationError({"workspace": [SLUG_MESSAGE]})
        if slug:
            membership = memberships.filter(workspace__slug=slug).first()
            if membership is None:
                if user.is_staff and reads_only:
                    workspace = Workspace.objects.filter(slug=slug).first()
                    if workspace is not None:
                        return workspace
                # The same answer whether the workspace exists or not: no probing of slugs.
                raise exceptions.NotFound(f"No workspace '{slug}' among yours.")
        else:
            found = list(memberships[:2])
            if len(found) != 1:
                raise exceptions.ValidationError(
                    {"workspace": ["Name the workspace: ?workspace=<slug>."]}
                    if found
                    else {"workspace": ["You are not a member of any workspace."]}
                )
            membership = found[0]
        if not reads_only and not membership.can_manage:
            raise exceptions.PermissionDenied("Only the workspace's owners and admins may do this.")
        return membership.workspace

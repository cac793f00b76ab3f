"""Which workspace a page shows, and what the signed-in person may do there.

The workspace is named by `?workspace=<slug>` (every dashboard link carries it, so a URL can be
shared), else the one chosen last in this session, else the person's first. A slug the person is
not a member of is a 404, whether it exists or not (no probing of slugs); staff may open any
workspace read-only. Viewers read; owners and admins manage keys, budgets and payment; only
owners change members.
"""

from __future__ import annotations

import functools
import zoneinfo
from dataclasses import dataclass

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import BadRequest, PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone

from workspaces.access import SLUG_MESSAGE, slug_is_valid
from workspaces.models import Membership, Workspace

SESSION_KEY = "dashboard_workspace"
READ, MANAGE, OWNER = "read", "manage", "owner"


@dataclass(frozen=True)
class WorkspaceAccess:
    workspace: Workspace
    role: str  # a Membership.Role value, or "staff" for staff reading a workspace they are not in
    memberships: tuple[Membership, ...]  # the person's, for the switcher

    @property
    def can_manage(self) -> bool:
        return self.role in (Membership.Role.OWNER, Membership.Role.ADMIN)

    @property
    def is_owner(self) -> bool:
        return self.role == Membership.Role.OWNER

    @property
    def is_staff_view(self) -> bool:
        return self.role == "staff"

    @property
    def role_label(self) -> str:
        return "Staff (read-only)" if self.is_staff_view else Membership.Role(self.role).label

    @property
    def query(self) -> str:
        """The query string that names this workspace, for links and redirects."""
        return f"workspace={self.workspace.slug}"

    def url(self, name: str, *args) -> str:
        return f"{reverse(name, args=args)}?{self.query}"

    def allows(self, needed: str) -> bool:
        return needed == READ or (needed == MANAGE and self.can_manage) or (needed == OWNER and self.is_owner)


def resolve(request) -> WorkspaceAccess | None:
    """The workspace this request shows, or None when the person belongs to none."""
    user = request.user
    memberships = tuple(
        Membership.objects.select_related("workspace").filter(user=user).order_by("workspace__name", "workspace__slug")
    )
    slug = request.GET.get("workspace") or request.POST.get("workspace")
    chosen = None
    if slug and not slug_is_valid(slug):
        raise BadRequest(SLUG_MESSAGE)
    if slug:
        chosen = next((m for m in memberships if m.workspace.slug == slug), None)
        if chosen is None:
            if user.is_staff:
                workspace = Workspace.objects.filter(slug=slug).first()
                if workspace is not None:
                    return WorkspaceAccess(workspace, "staff", memberships)
            raise Http404("No such workspace among yours.")
    else:
        remembered = request.session.get(SESSION_KEY)
        chosen = next((m for m in memberships if m.workspace.slug == remembered), None)
        chosen = chosen or (memberships[0] if memberships else None)
    if chosen is None:
        return None
    if request.session.get(SESSION_KEY) != chosen.workspace.slug:
        request.session[SESSION_KEY] = chosen.workspace.slug
    return WorkspaceAccess(chosen.workspace, chosen.role, memberships)


def workspace_page(needs: str = READ):
    """A signed-in page of one workspace: the view gets `request.access` (a WorkspaceAccess) and
    runs with the workspace's time zone active (rollup days and billing periods stay UTC).
    Pages that change something declare `needs=MANAGE` or `needs=OWNER`: others get a 403."""

    def decorate(view):
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path(), reverse("login"))
            try:
                access = resolve(request)
            except BadRequest as exc:
                return render(request, "dashboard/bad_request.html", {"message": str(exc)}, status=400)
            if access is None:
                if request.user.is_staff:
                    return redirect("dashboard:staff")
                return render(request, "dashboard/no_workspace.html", status=200)
            if not access.allows(needs):
                raise PermissionDenied(
                    "Only the workspace's owners may do this."
                    if needs == OWNER
                    else "Only the workspace's owners and admins may do this."
                )
            request.access = access
            try:
                zone = zoneinfo.ZoneInfo(access.workspace.timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                zone = zoneinfo.ZoneInfo("UTC")
            with timezone.override(zone):
                return view(request, *args, **kwargs)

        return wrapper

    return decorate

"""The pages' side of which workspace a page shows: the decorator every workspace page wears.

The rule itself (the slug, the membership, staff read-only, the roles) is workspaces.access
.workspace_for's; this module gives it what only pages have and answers its refusals as pages do.
The workspace is named by `?workspace=<slug>` (every dashboard link carries it, so a URL can be
shared), else the one chosen last in this session, else the person's first. A slug the person is
not a member of is a 404, whether it exists or not; staff may open any workspace read-only. Viewers
read; owners and admins manage keys, budgets and payment; only owners change members.
"""

from __future__ import annotations

import functools
import zoneinfo
from dataclasses import dataclass

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone

from core import logcontext
from workspaces.access import (
    MANAGE,
    OWNER,
    READ,
    Choice,
    InvalidSlug,
    NotAMember,
    NoWorkspace,
    RoleRefused,
    workspace_for,
)
from workspaces.models import Membership

__all__ = ["MANAGE", "OWNER", "READ", "SESSION_KEY", "PageAccess", "back", "workspace_page"]

SESSION_KEY = "dashboard_workspace"


@dataclass(frozen=True)
class PageAccess(Choice):
    """A page's workspace and role (workspaces.access.Choice), with what the templates and links need."""

    @property
    def role_label(self) -> str:
        return "Staff (read-only)" if self.is_staff_view else Membership.Role(self.role).label

    @property
    def query(self) -> str:
        """The query string that names this workspace, for links and redirects."""
        return f"workspace={self.workspace.slug}"

    def url(self, name: str, *args) -> str:
        return f"{reverse(name, args=args)}?{self.query}"


def back(request, name: str, *args) -> HttpResponse:
    """A redirect to a page of the request's workspace (after a change)."""
    return redirect(request.access.url(name, *args))


def _remember(request, choice: Choice) -> None:
    """The session remembers the last workspace a member chose (not one staff only read)."""
    if not choice.is_staff_view and request.session.get(SESSION_KEY) != choice.workspace.slug:
        request.session[SESSION_KEY] = choice.workspace.slug


def _choose(request, needs: str) -> PageAccess:
    """workspace_for with the page's slug (query or form) and the session's memory; raises its refusals."""
    slug = request.GET.get("workspace") or request.POST.get("workspace")
    try:
        choice = workspace_for(
            request.user, slug, needs=needs, remembered=request.session.get(SESSION_KEY), pick_first=True
        )
    except RoleRefused as exc:
        _remember(request, exc.choice)  # chosen, even if this page is not for this role
        logcontext.bind(workspace=exc.choice.workspace.slug)
        raise
    _remember(request, choice)
    logcontext.bind(workspace=choice.workspace.slug)
    return PageAccess(choice.workspace, choice.role, choice.memberships)


def _refused(request, exc: Exception) -> HttpResponse:
    """workspace_for's refusals as pages answer them."""
    if isinstance(exc, InvalidSlug):
        return render(request, "dashboard/bad_request.html", {"message": str(exc)}, status=400)
    if isinstance(exc, NotAMember):
        raise Http404("No such workspace among yours.")
    if isinstance(exc, NoWorkspace):
        if request.user.is_staff:
            return redirect("dashboard:staff")
        return render(request, "dashboard/no_workspace.html", status=200)
    raise PermissionDenied(str(exc))  # RoleRefused, StaffReadOnly included: a 403


def _zone(access: PageAccess) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(access.workspace.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def workspace_page(needs: str = READ):
    """A signed-in page of one workspace: the view gets `request.access` (a PageAccess) and
    runs with the workspace's time zone active (rollup days and billing periods stay UTC).
    Pages that change something declare `needs=MANAGE` or `needs=OWNER`: others get a 403."""

    def decorate(view):
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path(), reverse("login"))
            logcontext.bind(user=request.user.pk)  # the id, never the e-mail address
            try:
                request.access = _choose(request, needs)
            except (InvalidSlug, NotAMember, NoWorkspace, RoleRefused) as exc:
                return _refused(request, exc)
            with timezone.override(_zone(request.access)):
                return view(request, *args, **kwargs)

        return wrapper

    return decorate

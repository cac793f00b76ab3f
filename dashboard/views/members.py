"""The members page: who is in the workspace, and (owners only) adding, changing and removing members."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from workspaces.models import Membership
from workspaces.services import MembershipError, member_remove, member_role_set

from ..access import OWNER, back, workspace_page
from ..forms import MemberAddForm, MemberRoleForm
from ..selectors.members import members_of
from ..services import member_invite


def _members_page(request, form: MemberAddForm, status: int = 200):
    return render(
        request,
        "dashboard/members.html",
        {"members": members_of(request.access.workspace), "form": form, "roles": Membership.Role.choices},
        status=status,
    )


def _membership(request, membership_id: int) -> Membership:
    return get_object_or_404(Membership.objects.select_related("user"), pk=membership_id, workspace=request.access.workspace)


@require_GET
@workspace_page()
def members(request):
    return _members_page(request, MemberAddForm())


@require_POST
@workspace_page(OWNER)
def member_add(request):
    form = MemberAddForm(request.POST)
    if not form.is_valid():
        return _members_page(request, form, status=400)
    try:
        added = member_invite(
            workspace=request.access.workspace, email=form.cleaned_data["email"], role=form.cleaned_data["role"], invited_by=request.user
        )
    except MembershipError as exc:
        form.add_error("email", str(exc))
        return _members_page(request, form, status=400)
    email = added.membership.user.email
    messages.success(
        request,
        f"Added {email}. We e-mailed them a link to choose a password." if added.new_user else f"Added {email}; we let them know.",
    )
    return back(request, "dashboard:members")


@require_POST
@workspace_page(OWNER)
def member_role(request, membership_id: int):
    membership = _membership(request, membership_id)
    form = MemberRoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a role: owner, admin or viewer.")
        return back(request, "dashboard:members")
    try:
        member_role_set(membership=membership, role=form.cleaned_data["role"])
    except MembershipError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{membership.user.email} is now {membership.get_role_display().lower()}.")
    return back(request, "dashboard:members")


@require_POST
@workspace_page(OWNER)
def member_delete(request, membership_id: int):
    membership = _membership(request, membership_id)
    try:
        member_remove(membership=membership)
    except MembershipError as exc:
        messages.error(request, str(exc))
        return back(request, "dashboard:members")
    messages.success(request, f"Removed {membership.user.email} from the workspace.")
    if membership.user_id == request.user.pk:
        return redirect("dashboard:overview")
    return back(request, "dashboard:members")

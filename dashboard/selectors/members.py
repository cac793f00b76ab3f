"""The members page's read."""

from __future__ import annotations

from workspaces.models import Membership, Workspace


def members_of(workspace: Workspace) -> list[Membership]:
    """Owners, then admins, then viewers, each by e-mail."""
    order = {Membership.Role.OWNER: 0, Membership.Role.ADMIN: 1, Membership.Role.VIEWER: 2}
    members = list(Membership.objects.filter(workspace=workspace).select_related("user"))
    return sorted(members, key=lambda m: (order.get(m.role, 3), m.user.email or m.user.username))

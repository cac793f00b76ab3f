"""Which workspace a request acts on, and what its person may do there: the one rule, and the API's permission.

`workspace_for` is the rule, and the only place that decides it. Its two callers translate what it
raises into their own answers:

* the API (`WorkspaceAccess`, below, the DRF permission of every workspace-scoped view): JSON 400
  (an invalid slug, no workspace named when one must be), 404 (not a member) and 403 (the role);
* the dashboard's pages (dashboard.access.workspace_page): the HTML 400 page, a 404, the
  no-workspace page or the staff overview, and a 403.

The rule: `?workspace=<slug>` names the workspace. A slug that could not name one (see
`slug_is_valid`) is refused before any lookup. A slug the person is not a member of is "not a
member", whether the workspace exists or not (no probing of slugs), except that staff may read any
workspace that exists (the role "staff"), never change one. Without a slug: the one remembered (the
pages' session memory), else the person's only workspace; with several, the first by name when the
caller says so (the pages), else the caller must name one (the API). Viewers read; owners and
admins manage; owners own (members).

An API key is simpler: it acts on its own workspace only, within its scopes. A view names the scope
it needs (`required_scope = Scope.USAGE_READ`, or a tuple: any of them); writes other than
reporting usage need the owner or admin role. The resolved workspace is put on the view as
`view.workspace`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rest_framework import exceptions, permissions

from core import logcontext

from .models import ApiKey, Membership, Scope, Workspace

READ_SCOPES = {Scope.USAGE_READ}

SLUG_MAX_LENGTH = Workspace._meta.get_field("slug").max_length
_SLUG = re.compile(r"[-a-zA-Z0-9_]+")
SLUG_MESSAGE = f"Not a workspace slug: letters, digits, '-' and '_', at most {SLUG_MAX_LENGTH} characters."

# What a request needs: to read, to manage (keys, budgets, payment), to own (members).
READ, MANAGE, OWNER = "read", "manage", "owner"
STAFF = "staff"  # the role of staff reading a workspace they are not a member of


def slug_is_valid(slug: str) -> bool:
    """Whether `?workspace=` could name a workspace at all. Anything else (a NUL, which PostgreSQL
    refuses in a query, 5,000 characters, non-ASCII) is a 400 before any database lookup."""
    return len(slug) <= SLUG_MAX_LENGTH and _SLUG.fullmatch(slug) is not None


@dataclass(frozen=True)
class Choice:
    """The workspace a request acts on, the person's role there, and all their memberships."""

    workspace: Workspace
    role: str  # a Membership.Role value, or STAFF
    memberships: tuple[Membership, ...]  # the person's, by workspace name then slug

    @property
    def can_manage(self) -> bool:
        return self.role in (Membership.Role.OWNER, Membership.Role.ADMIN)

    @property
    def is_owner(self) -> bool:
        return self.role == Membership.Role.OWNER

    @property
    def is_staff_view(self) -> bool:
        return self.role == STAFF

    def allows(self, needed: str) -> bool:
        return needed == READ or (needed == MANAGE and self.can_manage) or (needed == OWNER and self.is_owner)


# --- What the rule refuses: each caller answers these in its own way ----------------------------------


class AccessRefused(Exception):
    """The base of the rule's refusals; the message is for a person."""


class InvalidSlug(AccessRefused):
    """`?workspace=` could not name a workspace (checked before any lookup)."""

    def __init__(self):
        super().__init__(SLUG_MESSAGE)


class NotAMember(AccessRefused):
    """The slug names no workspace of the person's: the same whether it exists or not."""

    def __init__(self, slug: str):
        super().__init__(f"No workspace '{slug}' among yours.")
        self.slug = slug


class NoWorkspace(AccessRefused):
    """No slug, and the person is a member of no workspace."""

    def __init__(self):
        super().__init__("You are not a member of any workspace.")


class Unnamed(AccessRefused):
    """No slug, several workspaces, and the caller does not pick one for the person."""

    def __init__(self):
        super().__init__("Name the workspace: ?workspace=<slug>.")


class RoleRefused(AccessRefused):
    """The workspace is chosen (`choice`), but the role does not allow what is `needed`."""

    def __init__(self, choice: Choice, needed: str):
        super().__init__(
            "Only the workspace's owners may do this."
            if needed == OWNER
            else "Only the workspace's owners and admins may do this."
        )
        self.choice, self.needed = choice, needed


class StaffReadOnly(RoleRefused):
    """Staff who are not a member asked to change a workspace that exists: staff only read."""


# --- The rule ------------------------------------------------------------------------------------------


def memberships_of(user) -> tuple[Membership, ...]:
    return tuple(
        Membership.objects.select_related("workspace")
        .filter(user=user)
        .order_by("workspace__name", "workspace__slug")
    )


def workspace_for(
    user, slug: str | None, *, needs: str = READ, remembered: str | None = None, pick_first: bool = False
) -> Choice:
    """The workspace `user` (signed in) acts on when asking for `slug` (None or "" for none), and
    their role there, checked against what the request `needs` (READ, MANAGE or OWNER).

    Without a slug: the membership named by `remembered`, else the only one; with several, the
    first when `pick_first`, else Unnamed. Raises InvalidSlug, NotAMember, NoWorkspace, Unnamed,
    RoleRefused (StaffReadOnly for staff changing a workspace they only read)."""
    if slug and not slug_is_valid(slug):
        raise InvalidSlug()
    memberships = memberships_of(user)
    choice = _named(user, slug, memberships) if slug else _unnamed(memberships, remembered, pick_first)
    if choice.is_staff_view and needs != READ:
        raise StaffReadOnly(choice, needs)
    if not choice.allows(needs):
        raise RoleRefused(choice, needs)
    return choice


def _named(user, slug: str, memberships: tuple[Membership, ...]) -> Choice:
    membership = next((m for m in memberships if m.workspace.slug == slug), None)
    if membership is not None:
        return Choice(membership.workspace, membership.role, memberships)
    if user.is_staff:
        workspace = Workspace.objects.filter(slug=slug).first()
        if workspace is not None:
            return Choice(workspace, STAFF, memberships)
    raise NotAMember(slug)  # the same answer whether the workspace exists or not: no probing of slugs


def _unnamed(memberships: tuple[Membership, ...], remembered: str | None, pick_first: bool) -> Choice:
    membership = next((m for m in memberships if m.workspace.slug == remembered), None)
    if membership is None:
        if not memberships:
            raise NoWorkspace()
        if len(memberships) > 1 and not pick_first:
            raise Unnamed()
        membership = memberships[0]
    return Choice(membership.workspace, membership.role, memberships)


# --- The API's permission ------------------------------------------------------------------------------


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
        logcontext.bind(user=user.pk)  # the id, never the e-mail address
        view.workspace = self._session_workspace(request, user, reads_only=set(scopes) <= READ_SCOPES)
        logcontext.bind(workspace=view.workspace.slug)
        return True

    def _session_workspace(self, request, user, *, reads_only: bool) -> Workspace:
        """workspace_for's answer, its refusals as the API's: 400 and 404 in the error envelope, 403."""
        slug = request.query_params.get("workspace")
        try:
            return workspace_for(user, slug, needs=READ if reads_only else MANAGE).workspace
        except (InvalidSlug, Unnamed, NoWorkspace) as exc:
            raise exceptions.ValidationError({"workspace": [str(exc)]}) from None
        except (NotAMember, StaffReadOnly):
            # Staff only read: a change asked of a workspace they are not in is not found, as for anyone.
            raise exceptions.NotFound(str(NotAMember(slug))) from None
        except RoleRefused as exc:
            raise exceptions.PermissionDenied(str(exc)) from None

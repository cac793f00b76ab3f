"""The demo's people, workspace and API keys: "Pixel Forge Studio", an owner, a viewer, a staff
superuser, and two keys (production generators, analytics). Created when missing, kept otherwise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from workspaces.models import ALL_SCOPES, ApiKey, Membership, Scope, Workspace
from workspaces.services import api_key_create, workspace_create

DEMO_SLUG = "demo"
DEMO_NAME = "Pixel Forge Studio"
DEMO_TIMEZONE = "Europe/Paris"
OWNER_EMAIL = "demo@meterboard.local"
VIEWER_EMAIL = "viewer@meterboard.local"
STAFF_EMAIL = "staff@meterboard.local"
DEFAULT_PASSWORD = "meterboard-demo"

PRODUCTION = "Production generators"
ANALYTICS = "Analytics"
DEMO_KEYS: dict[str, tuple[str, ...]] = {
    PRODUCTION: (Scope.USAGE_WRITE.value,),
    ANALYTICS: ALL_SCOPES,
}


@dataclass
class DemoAccounts:
    workspace: Workspace
    owner: Any
    viewer: Any
    staff: Any
    keys: dict[str, ApiKey]  # by DEMO_KEYS name
    new_secrets: dict[str, str]  # only for keys created by this call: the one chance to show them


def _person(email: str, first_name: str, last_name: str, password: str, *, staff: bool = False):
    user, _ = get_user_model().objects.get_or_create(
        username=email, defaults={"email": email, "first_name": first_name, "last_name": last_name}
    )
    changed = []
    if not user.check_password(password):
        user.set_password(password)
        changed.append("password")
    if staff and not (user.is_staff and user.is_superuser):
        user.is_staff = user.is_superuser = True
        changed += ["is_staff", "is_superuser"]
    if changed:
        user.save(update_fields=changed)
    return user


def _workspace() -> Workspace:
    is_new = not Workspace.objects.filter(slug=DEMO_SLUG).exists()
    workspace = workspace_create(slug=DEMO_SLUG, owner_email=OWNER_EMAIL, name=DEMO_NAME)
    if is_new:
        workspace.timezone = DEMO_TIMEZONE
        workspace.save(update_fields=["timezone"])
    return workspace


def _keys(workspace: Workspace) -> tuple[dict[str, ApiKey], dict[str, str]]:
    """Each DEMO_KEYS key (its oldest live one), issued when missing; and the new ones' secrets."""
    keys: dict[str, ApiKey] = {}
    new_secrets: dict[str, str] = {}
    for name, scopes in DEMO_KEYS.items():
        key = (
            ApiKey.objects.filter(workspace=workspace, name=name, revoked_at__isnull=True)
            .order_by("created_at", "pk")
            .first()
        )
        if key is None:
            issued = api_key_create(workspace=workspace, name=name, scopes=scopes)
            key, new_secrets[name] = issued.api_key, issued.secret
        keys[name] = key
    return keys, new_secrets


@transaction.atomic
def demo_accounts_ensure(*, password: str = DEFAULT_PASSWORD) -> DemoAccounts:
    """The demo workspace, its people and its keys, created when missing.

    Promises: safe to call again (nothing is duplicated; existing keys are kept, since their
    secrets cannot be shown again); every demo login, staff included, ends with `password`.
    """
    workspace = _workspace()
    owner = _person(OWNER_EMAIL, "Camille", "Martin", password)
    viewer = _person(VIEWER_EMAIL, "Léo", "Bernard", password)
    Membership.objects.get_or_create(
        workspace=workspace, user=viewer, defaults={"role": Membership.Role.VIEWER}
    )
    staff = _person(STAFF_EMAIL, "Meterboard", "Staff", password, staff=True)
    keys, new_secrets = _keys(workspace)
    return DemoAccounts(workspace, owner, viewer, staff, keys, new_secrets)

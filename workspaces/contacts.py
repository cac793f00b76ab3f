"""Who hears about a workspace, and where a message sends them: one rule each for every app that
e-mails people about their workspace (billing's payment e-mails, budgets' alerts)."""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.urls import reverse

from .models import Membership, Workspace


def owner_and_admin_emails(workspace_id: int) -> list[str]:
    """The e-mail addresses of the workspace's owners and admins, oldest membership first, each
    once; members without an address are left out."""
    emails = (
        Membership.objects.filter(workspace_id=workspace_id, role__in=[Membership.Role.OWNER, Membership.Role.ADMIN])
        .exclude(user__email="")
        .order_by("created_at")
        .values_list("user__email", flat=True)
    )
    return list(dict.fromkeys(emails))


def dashboard_url(workspace: Workspace) -> str:
    """The workspace's dashboard (its overview) as an absolute link on SITE_URL."""
    return f"{settings.SITE_URL}{reverse('dashboard:overview')}?{urlencode({'workspace': workspace.slug})}"

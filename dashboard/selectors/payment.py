"""The payment method page's read (the card itself is billing.cards.payment_card)."""

from __future__ import annotations

from django.db.models import QuerySet

from billing.models import Statement
from workspaces.models import Workspace


def failed_statements(workspace: Workspace) -> QuerySet[Statement]:
    """The workspace's statements whose payment failed, oldest month first."""
    return Statement.objects.filter(workspace=workspace, status=Statement.Status.PAYMENT_FAILED).order_by("period")

"""The "Get started" checklist's reads: which first steps a workspace has taken, and the first
events the live panel shows as they arrive.

Each step is read from the workspace's state, never stored: ticking one is doing it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from billing.models import StripeCustomer
from budgets.models import Budget
from usage.models import DailyRollup, EventReceipt, UsageEvent
from workspaces.models import ApiKey, Workspace

LIVE_EVENTS = 10  # how many of the latest events the live panel lists
LIVE_WINDOW = timedelta(days=31)  # only the latest partitions: a first event is a recent one


@dataclass(frozen=True)
class Onboarding:
    has_key: bool  # an API key that is not revoked
    has_events: bool  # any usage ever (receipts and rollups outlive archived events)
    has_budget: bool
    has_card: bool  # a default payment method with Stripe

    @property
    def done(self) -> bool:
        return self.has_key and self.has_events and self.has_budget and self.has_card

    @property
    def remaining(self) -> int:
        return [self.has_key, self.has_events, self.has_budget, self.has_card].count(False)


def onboarding_of(workspace: Workspace) -> Onboarding:
    """The checklist's four steps, in five indexed existence reads whatever the volume (never the raw
    events, which the overview does not read)."""
    return Onboarding(
        has_key=ApiKey.objects.filter(workspace=workspace, revoked_at__isnull=True).exists(),
        has_events=(
            EventReceipt.objects.filter(workspace=workspace).exists()
            or DailyRollup.objects.filter(workspace=workspace).exists()
        ),
        has_budget=Budget.objects.filter(workspace=workspace).exists(),
        has_card=StripeCustomer.objects.filter(workspace=workspace)
        .exclude(default_payment_method="")
        .exists(),
    )


@dataclass(frozen=True)
class LiveEvent:
    event_id: str
    received_at: datetime
    feature: str
    model: str
    quantity: int
    amount: Decimal  # USD, list price, 6 dp


def latest_events(workspace: Workspace, *, now: datetime, limit: int = LIVE_EVENTS) -> list[LiveEvent]:
    """The workspace's latest events by arrival (newest first), from the last LIVE_WINDOW only."""
    rows = (
        UsageEvent.objects.filter(workspace=workspace, received_at__gte=now - LIVE_WINDOW)
        .order_by("-received_at", "-pk")
        .values_list("event_id", "received_at", "feature", "model", "quantity", "amount")[:limit]
    )
    return [LiveEvent(*row) for row in rows]

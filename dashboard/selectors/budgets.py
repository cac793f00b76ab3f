"""The budgets page's reads (the overview shows the budgets' progress too): the budgets with this
month's spend and forecast of each one's scope, one budget, the alerts' history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from budgets.models import Alert, Budget
from budgets.selectors import alerts_of, budgets_of, budgets_status
from workspaces.models import Workspace

from .. import clock


@dataclass(frozen=True)
class BudgetProgress:
    budget: Budget
    spend: Decimal  # USD, month to date, of the budget's scope
    forecast: Decimal  # USD, projected month end

    @property
    def percent(self) -> Decimal:
        if not self.budget.amount:
            return Decimal(0)
        return (self.spend / self.budget.amount * 100).quantize(Decimal("0.1"))

    @property
    def forecast_percent(self) -> Decimal:
        if not self.budget.amount:
            return Decimal(0)
        return (self.forecast / self.budget.amount * 100).quantize(Decimal("0.1"))

    @property
    def scope(self) -> str:
        key = self.budget.api_key
        return f"API key {key.name}" if key is not None else "Whole workspace"


def budgets_progress(workspace: Workspace, *, now: datetime | None = None) -> list[BudgetProgress]:
    """The workspace's budgets with this month's spend and forecast of each one's scope: the
    workspace-wide ones first, smallest first."""
    progress = [
        BudgetProgress(status.budget, status.forecast.spend, status.forecast.forecast)
        for status in budgets_status(list(budgets_of(workspace)), now=now or clock.now())
    ]
    progress.sort(key=lambda b: (b.budget.api_key_id is not None, b.budget.amount, b.budget.pk))
    return progress


def budget_of(workspace: Workspace, budget_id: int) -> Budget | None:
    return budgets_of(workspace).filter(pk=budget_id).first()


def alerts_history(workspace: Workspace, *, limit: int = 50) -> list[Alert]:
    """The newest alerts with the delivery status of each channel."""
    return alerts_of(workspace, limit=limit)

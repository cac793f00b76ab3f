"""Going away (issue 11): billing's services now live in billing.close, billing.drafts,
billing.reissue, billing.selectors and core.periods. These names stay only until budgets and the
benchmarks import them from there."""

from core.periods import month_start, next_month, period_bounds

from .close import period_close
from .selectors import default_plan, plan_for_period

__all__ = ["default_plan", "month_start", "next_month", "period_bounds", "period_close", "plan_for_period"]

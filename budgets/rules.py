"""What a budget may be: the one owner of the rules that both the budgets API
(budgets.serializers.BudgetInputSerializer) and the dashboard's form (dashboard.forms.BudgetForm)
apply, with their messages for people.

Each caller parses its own input (JSON fields, or the form's text boxes) and reports errors its own
way (per field, or per line); the bounds, the checks and the words come from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from django.conf import settings
from django.db.models import QuerySet

from core import webhooks
from workspaces.models import ApiKey, Workspace

AMOUNT_MIN = Decimal("0.01")  # USD a month
AMOUNT_MAX = Decimal("1000000000")
AMOUNT_DIGITS = 18  # as stored (budgets.models.Budget.amount)
AMOUNT_PLACES = 6
THRESHOLD_MIN, THRESHOLD_MAX = 1, 1000  # whole percents of the amount
MAX_THRESHOLDS = 10
# A budget's anomaly_threshold: the score (spreads above the usual, budgets.anomaly) from which a
# day's spend is alerted. Below 2 ordinary noise alerts; above 20 nothing would.
ANOMALY_THRESHOLD_MIN = Decimal("2")
ANOMALY_THRESHOLD_MAX = Decimal("20")
MAX_WEBHOOKS = 10


class BudgetInvalid(ValueError):
    """Input a budget may not have; the message says why, for a person."""


def thresholds_check(values: Sequence[int]) -> list[int]:
    """The thresholds, sorted, when each is a whole percent from THRESHOLD_MIN to THRESHOLD_MAX,
    given once, and there are at most MAX_THRESHOLDS of them."""
    if any(not THRESHOLD_MIN <= value <= THRESHOLD_MAX for value in values):
        raise BudgetInvalid(f"Each threshold is between {THRESHOLD_MIN} and {THRESHOLD_MAX} percent.")
    if len(set(values)) != len(values):
        raise BudgetInvalid("Each threshold once.")
    if len(values) > MAX_THRESHOLDS:
        raise BudgetInvalid(f"At most {MAX_THRESHOLDS} thresholds.")
    return sorted(values)


def webhooks_count_check(urls: Sequence[str]) -> None:
    if len(urls) > MAX_WEBHOOKS:
        raise BudgetInvalid(f"At most {MAX_WEBHOOKS} webhooks.")


def webhook_url_check(url: str) -> str:
    """The URL, stripped, when a webhook may POST to it: http(s), and every address its host
    resolves to public (unless WEBHOOK_ALLOW_PRIVATE), resolved within WEBHOOK_TIMEOUT_SECONDS
    (budgets.webhooks.url_target). Checked again before every delivery."""
    try:
        webhooks.url_target(
            url,
            allow_private=getattr(settings, "WEBHOOK_ALLOW_PRIVATE", False),
            timeout=float(getattr(settings, "WEBHOOK_TIMEOUT_SECONDS", 5)),
        )
    except webhooks.UrlRefused as exc:
        raise BudgetInvalid(str(exc)) from None
    except TimeoutError:
        raise BudgetInvalid("The host name did not resolve in time; try again.") from None
    return url.strip()


def budget_api_keys(workspace: Workspace) -> QuerySet[ApiKey]:
    """The keys a budget of the workspace may be narrowed to: its active ones."""
    return ApiKey.objects.filter(workspace=workspace, revoked_at__isnull=True)


def budget_api_key(workspace: Workspace, text: str) -> ApiKey:
    """The workspace's key named by its visible prefix (`mbk_…`, the `mbk_` optional), if active."""
    prefix = text.strip().removeprefix("mbk_")
    api_key = ApiKey.objects.filter(workspace=workspace, prefix=prefix).first()
    if api_key is None:
        raise BudgetInvalid(f"No API key {text!r} in this workspace (give its mbk_… prefix).")
    if not api_key.is_active:
        raise BudgetInvalid("This API key is revoked.")
    return api_key

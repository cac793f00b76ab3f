"""Writes for budgets: budgets and their webhook endpoints, and what follows a change.

The alerts a budget calls for are budgets.evaluation's; delivering them is budgets.delivery's.
The input was checked by the caller (budgets.serializers or dashboard.forms, both applying
budgets.rules); which endpoints an edit keeps is decided here, for both.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction

from core import webhooks
from core.errors import ServiceError
from workspaces.models import ApiKey, Workspace

from . import counters
from .anomaly import DEFAULT_THRESHOLD as DEFAULT_ANOMALY_THRESHOLD
from .evaluation import evaluation_request
from .models import Budget, WebhookEndpoint

CHANGEABLE = frozenset({"amount", "thresholds", "forecast_alerts", "hard_limit", "api_key", "email", "anomaly_threshold"})


@dataclass(frozen=True)
class IssuedEndpoint:
    endpoint: WebhookEndpoint
    secret: str  # shown once, in the answer that created the endpoint


@dataclass(frozen=True)
class WebhookSpec:
    """One webhook of the list a budget has after an edit. It keeps an endpoint of the budget, with
    its secret, when it names one: by `id` (the API; the endpoint's URL becomes `url`), or, for a
    caller that knows only URLs (the dashboard's form: `same_url_keeps`), by being the URL the
    endpoint already has. Otherwise it is a new endpoint with a new secret."""

    url: str
    id: int | None = None
    same_url_keeps: bool = False

    @classmethod
    def of_urls(cls, urls: Sequence[str]) -> list[WebhookSpec]:
        """A list of URLs: a URL the budget already has keeps its endpoint, others are new."""
        return [cls(url=url, same_url_keeps=True) for url in urls]


class WebhookUnknown(ServiceError):
    """A webhook entry names an endpoint the budget does not have. `errors` says which entry, in
    the shape of the API's per-field errors: {"webhooks": [{}, {"id": ["No webhook 7 on this budget."]}]}."""


def _endpoints_create(budget: Budget, urls: Sequence[str]) -> list[IssuedEndpoint]:
    issued = []
    for url in urls:
        secret = webhooks.secret_generate()
        issued.append(IssuedEndpoint(WebhookEndpoint.objects.create(budget=budget, url=url, secret=secret), secret))
    return issued


@transaction.atomic
def budget_create(
    *,
    workspace: Workspace,
    amount: Decimal,
    thresholds: Sequence[int],
    forecast_alerts: bool = True,
    hard_limit: bool = False,
    api_key: ApiKey | None = None,
    email: bool = True,
    webhook_urls: Sequence[str] = (),
    anomaly_threshold: Decimal | None = DEFAULT_ANOMALY_THRESHOLD,
) -> tuple[Budget, list[IssuedEndpoint]]:
    """Create a budget and its webhook endpoints (each with a new secret, returned once), then
    evaluate the workspace: a budget below this month's spend alerts within a minute."""
    if api_key is not None and api_key.workspace_id != workspace.pk:
        raise ValueError("The API key belongs to another workspace.")
    budget = Budget.objects.create(
        workspace=workspace,
        api_key=api_key,
        amount=amount,
        thresholds=sorted(set(thresholds)),
        forecast_alerts=forecast_alerts,
        hard_limit=hard_limit,
        email=email,
        anomaly_threshold=anomaly_threshold,
    )
    issued = _endpoints_create(budget, webhook_urls)
    budget_changed(workspace.pk)
    return budget, issued


def _no_webhook(endpoint_id: int) -> str:
    return f"No webhook {endpoint_id} on this budget."


def _endpoint_kept(spec: WebhookSpec, by_url: dict[str, int]) -> int | None:
    """The id of the endpoint `spec` keeps, None for a new one."""
    if spec.id is not None:
        return spec.id
    return by_url.get(spec.url) if spec.same_url_keeps else None


def _webhooks_replace(budget: Budget, specs: Sequence[WebhookSpec]) -> list[IssuedEndpoint]:
    """Make the budget's endpoints exactly `specs` (see WebhookSpec): kept ones take their new URL,
    the budget's others are deleted, and specs that keep none are created. Raises WebhookUnknown,
    before any change, for an id the budget does not have."""
    existing = {endpoint.pk: endpoint for endpoint in budget.webhooks.all()}
    unknown = [spec.id for spec in specs if spec.id is not None and spec.id not in existing]
    if unknown:
        errors = [{"id": [_no_webhook(spec.id)]} if spec.id in unknown else {} for spec in specs]
        raise WebhookUnknown(_no_webhook(unknown[0]), errors={"webhooks": errors})
    by_url = {endpoint.url: pk for pk, endpoint in existing.items()}
    kept = [_endpoint_kept(spec, by_url) for spec in specs]
    keep = {pk: spec.url for spec, pk in zip(specs, kept, strict=True) if pk is not None}
    for pk, endpoint in existing.items():
        if pk not in keep:
            endpoint.delete()
        elif endpoint.url != keep[pk]:
            endpoint.url = keep[pk]
            endpoint.save(update_fields=["url"])
    return _endpoints_create(budget, [spec.url for spec, pk in zip(specs, kept, strict=True) if pk is None])


@transaction.atomic
def budget_update(
    *, budget: Budget, changes: dict, webhooks_spec: Sequence[WebhookSpec] | None = None
) -> tuple[Budget, list[IssuedEndpoint]]:
    """Change some of amount, thresholds, forecast_alerts, hard_limit, api_key, email,
    anomaly_threshold. With
    `webhooks_spec`, the budget's endpoints become exactly those (WebhookSpec says which are kept,
    with their secret); new ones are returned with their secret, once.

    A hard limit reads the budget on every allowance call, so raising it unblocks at once.
    Thresholds already alerted this month stay alerted (at most one alert per threshold and month)."""
    unknown = set(changes) - CHANGEABLE
    if unknown:
        raise ValueError(f"Cannot change {', '.join(sorted(unknown))}.")
    if "thresholds" in changes:
        changes = {**changes, "thresholds": sorted(set(changes["thresholds"]))}
    api_key = changes.get("api_key")
    if api_key is not None and api_key.workspace_id != budget.workspace_id:
        raise ValueError("The API key belongs to another workspace.")
    issued = [] if webhooks_spec is None else _webhooks_replace(budget, webhooks_spec)
    for name, value in changes.items():
        setattr(budget, name, value)
    budget.save()
    budget_changed(budget.workspace_id)
    return budget, issued


@transaction.atomic
def budget_delete(*, budget: Budget) -> None:
    """Delete a budget and its endpoints; its alerts stay in the history (budget: null).
    Deliveries still waiting for a deleted endpoint are cancelled at their next attempt."""
    budget.delete()
    budget_changed(budget.workspace_id)


def budget_changed(workspace_id: int) -> None:
    """After the commit: drop the allowance's cached hard limits (so the next call reads the new
    amounts) and evaluate the workspace (a budget lowered below the spend alerts at once)."""
    transaction.on_commit(functools.partial(counters.limits_changed, workspace_id))
    transaction.on_commit(functools.partial(evaluation_request, workspace_id))

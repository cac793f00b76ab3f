"""The billing details page: who the invoices are addressed to and where they go (the workspace's
billing profile), and the tax that applies. Members read it; owners and admins change it."""

from __future__ import annotations

import pycountry
from django.contrib import messages
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST
from rest_framework.exceptions import ValidationError

from billing.invoice_pdf import country_name
from billing.profiles import FIELDS, billing_profile_of, billing_profile_update
from billing.selectors import taxes_by_workspace

from ..access import MANAGE, back, workspace_page

COUNTRIES = sorted(((c.alpha_2, c.name) for c in pycountry.countries), key=lambda pair: pair[1])


def _page(request, values: dict, errors: dict | None = None, status: int = 200):
    workspace = request.access.workspace
    tax = taxes_by_workspace([workspace.pk])[workspace.pk]
    return render(
        request,
        "dashboard/billing_details.html",
        {
            "values": values,
            "errors": errors or {},
            "countries": COUNTRIES,
            "country_name": country_name(values.get("country", "")),
            "tax": tax,
        },
        status=status,
    )


@require_GET
@workspace_page()
def billing_details(request):
    profile = billing_profile_of(request.access.workspace)
    values = {name: getattr(profile, name) for name in FIELDS}
    values["billing_emails"] = "\n".join(profile.billing_emails)
    return _page(request, values)


@require_POST
@workspace_page(MANAGE)
def billing_details_save(request):
    data = {name: request.POST.get(name, "") for name in FIELDS}
    emails = data.pop("billing_emails").replace(",", "\n").splitlines()
    data["billing_emails"] = [e.strip() for e in emails if e.strip()]
    try:
        billing_profile_update(request.access.workspace, data)
    except ValidationError as exc:
        errors = {name: [str(m) for m in (v if isinstance(v, list) else [v])] for name, v in exc.detail.items()}
        values = {**data, "billing_emails": request.POST.get("billing_emails", "")}
        return _page(request, values, errors, status=400)
    messages.success(request, "Billing details saved: the next invoices are addressed to them.")
    return back(request, "dashboard:billing-details")

"""The staff overview: every workspace's month, failed payments, budgets reached, scheduled closes."""

from __future__ import annotations

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.shortcuts import render
from django.views.decorators.http import require_GET

from .. import clock
from ..selectors.staff import staff_overview


@require_GET
@staff_member_required
def staff(request):
    now = clock.now()
    return render(
        request,
        "dashboard/staff.html",
        {"data": staff_overview(now=now), "now": now, "close_day": settings.BILLING_CLOSE_DAY},
    )

"""Pages for signed-in people. The full dashboard (charts, budgets, statements) is its own issue;
this overview shows the month to date from the same selector the API uses."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render
from django.utils import timezone

from usage.selectors import usage_summary
from workspaces.models import Membership


@login_required
def overview(request):
    memberships = list(Membership.objects.select_related("workspace").filter(user=request.user))
    slug = request.GET.get("workspace")
    current = next((m for m in memberships if m.workspace.slug == slug), None) if slug else None
    if slug and current is None:
        raise Http404("No such workspace among yours.")
    current = current or (memberships[0] if memberships else None)
    context = {"memberships": memberships, "membership": current}
    if current is not None:
        today = timezone.now().date()
        start = today.replace(day=1)
        context.update(
            start=start,
            end=today,
            by_feature=usage_summary(
                workspace=current.workspace, start=start, end=today, group_by=("feature",)
            ),
            by_day=usage_summary(
                workspace=current.workspace, start=start, end=today, group_by=("day",)
            ),
        )
    return render(request, "dashboard/overview.html", context)

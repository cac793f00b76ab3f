"""The usage pages: events (by keyset pages), daily rollups, and the CSV export of either."""

from __future__ import annotations

from urllib.parse import urlencode

from django.core.paginator import Paginator
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from core.replicas import replica_reads

from .. import clock
from ..access import workspace_page
from ..csv_export import csv_lines
from ..forms import UsageFilterForm
from ..selectors import usage as selectors


def _usage_filters(request) -> tuple[UsageFilterForm, dict]:
    form = UsageFilterForm(request.GET, workspace=request.access.workspace, today=clock.utc_today())
    return form, form.filters()


def _filter_query(request, form: UsageFilterForm, filters: dict) -> dict:
    """The filters as they appear in the page's links (with the workspace), for the template, and
    whether any narrows this month's (an empty table then offers to clear them)."""
    values = {
        "start": filters["start"].isoformat(),
        "end": filters["end"].isoformat(),
        "feature": filters["feature"],
        "model": filters["model"],
        "api_key": filters["api_key_id"] or "",
    }
    return {
        "filters": values,
        "query": urlencode({"workspace": request.access.workspace.slug, **values}),
        "filtered": filters != form.unfiltered(),
    }


@require_GET
@replica_reads
@workspace_page()
def usage_events(request):
    form, filters = _usage_filters(request)
    cursor = form.cursor()
    page = selectors.events_page(request.access.workspace, filters, before=cursor)
    return render(
        request,
        "dashboard/usage.html",
        {
            "tab": "events",
            "form": form,
            **_filter_query(request, form, filters),
            "page": page,
            "first_page": cursor is None,
            "hint": selectors.export_hint(request.access.workspace, filters),
        },
    )


@require_GET
@replica_reads
@workspace_page()
def usage_rollups(request):
    form, filters = _usage_filters(request)
    paginator = Paginator(selectors.rollups_queryset(request.access.workspace, filters), 50)
    return render(
        request,
        "dashboard/usage.html",
        {
            "tab": "rollups",
            "form": form,
            **_filter_query(request, form, filters),
            "rollups": paginator.get_page(form.page_number()),
            "hint": selectors.export_hint(request.access.workspace, filters),
        },
    )


@require_GET
@replica_reads
@workspace_page()
def usage_export(request):
    """CSV of events (or of daily rollups) of any range, streamed: rows are read in chunks
    through a server-side cursor and written as they come, so memory stays flat. Every parameter
    is checked before the first byte: a bad one is a 400 naming it, never this month instead."""
    form, filters = _usage_filters(request)
    if not form.is_valid():
        problems = "\n".join(form.problems())
        return HttpResponse(f"Nothing exported: {problems}\n", status=400, content_type="text/plain; charset=utf-8")
    workspace = request.access.workspace
    kind = form.export_kind()
    hint = selectors.export_hint(workspace, filters)
    rows = (selectors.rollups_csv_rows if kind == "rollups" else selectors.events_csv_rows)(workspace, filters)
    response = StreamingHttpResponse(csv_lines(rows), content_type="text/csv; charset=utf-8")
    name = f"meterboard-{workspace.slug}-{kind}-{filters['start']:%Y%m%d}-{filters['end']:%Y%m%d}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    # Rows to expect (from the rollups' counts), for a client's progress; no Content-Length when streaming.
    response["X-Expected-Rows"] = str(hint.rollups if kind == "rollups" else hint.events)
    response["Cache-Control"] = "no-store"
    return response

"""The dashboard's pages, one module per page group. Thin: parse the request, call a selector or a
service, render.

The scheme: `dashboard/views/<group>.py` holds a page group's views (overview, usage, statements,
budgets, keys, members, payment, staff) and `dashboard/selectors/<group>.py` its reads, under the
same name; dashboard/urls.py imports the modules. Every page is of one workspace
(dashboard.access.workspace_page): `?workspace=<slug>` names it, members of other workspaces get a
404, and pages that change something check the role.

Nothing is re-exported here. The one view defined here belongs to no page group: config/urls.py
answers /favicon.ico with it.
"""

from __future__ import annotations

from django.shortcuts import redirect
from django.templatetags.static import static


def favicon(request):
    """/favicon.ico, which browsers ask for on pages that name no icon (the admin, the API docs)."""
    return redirect(static("img/favicon.svg"), permanent=True)

"""Reads behind the dashboard's pages, one module per page group.

The scheme: `dashboard/selectors/<group>.py` holds the reads of the pages whose views are in
`dashboard/views/<group>.py` (overview, usage, statements, budgets, keys, members, payment, staff),
so a page's view and its reads sit under the same name, and each module has one job. A read two
pages share lives with the page group that owns it (budgets_progress in budgets, used by the
overview too). The time comes from dashboard.clock. Nothing is re-exported here: import the module.

Spend comes from the daily rollups (usage.selectors.usage_summary), never from a scan of raw
events, so the overview costs the same for a thousand events as for millions. Rollup days and
billing months are UTC; only timestamps are shown in the workspace's time zone.
"""

"""The workspaces the benchmarks make and delete: one at a time through the management commands,
as an operator makes them (ingest, allowance), through the services (overview), or by the
thousand in a few SQL statements (close, PostgreSQL). Django must be set up
(bench.environment.Bench.activate)."""

from __future__ import annotations

from datetime import date

from core.periods import period_bounds

from .environment import Bench, DatabaseError


def create(bench: Bench, slug: str, owner: str, key_names: tuple[str, ...]) -> tuple[int, list[str]]:
    """A workspace and API keys through `manage.py create_workspace` and `create_api_key`: the
    workspace's id and the keys' secrets (each printed alone on the command's last line)."""
    from workspaces.models import Workspace

    bench.manage("create_workspace", slug, "--owner", owner)
    issued = []
    for name in key_names:
        lines = [line.strip() for line in bench.manage("create_api_key", slug, "--name", name).splitlines()]
        lines = [line for line in lines if line]
        if not lines:
            raise DatabaseError("create_api_key printed no secret")
        issued.append(lines[-1])
    return Workspace.objects.get(slug=slug).pk, issued


def with_keys(slug: str, owner: str, name: str, key_names: tuple[str, ...]) -> tuple[int, int, list[int]]:
    """The workspace `slug` (made if missing: workspaces.services, idempotent) owned by `owner`,
    with at least len(key_names) API keys: its id, the owner's id, the keys' ids."""
    from django.contrib.auth import get_user_model

    from workspaces.models import ApiKey, Membership
    from workspaces.services import api_key_create, workspace_create

    workspace = workspace_create(slug=slug, owner_email=owner, name=name)
    user = get_user_model().objects.get(username=owner)
    Membership.objects.filter(workspace=workspace, user=user).update(role=Membership.Role.OWNER)
    keys = list(ApiKey.objects.filter(workspace=workspace).order_by("pk").values_list("pk", flat=True))
    for key_name in key_names[len(keys):]:
        keys.append(api_key_create(workspace=workspace, name=key_name).api_key.pk)
    return workspace.pk, user.pk, keys


def delete(workspace_id: int) -> None:
    """A bench workspace and everything in it: events (one statement, not a row-by-row delete of
    millions), rollups, statements, budgets and alerts, keys, members."""
    from django.db import connection, transaction

    from billing.models import Invoice, Statement, StatementLine
    from budgets.models import Budget
    from usage.models import DailyRollup
    from workspaces.models import ApiKey, Membership, Workspace

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM usage_usageevent WHERE workspace_id = %s", [workspace_id])
            cursor.execute("DELETE FROM usage_eventreceipt WHERE workspace_id = %s", [workspace_id])
        DailyRollup.objects.filter(workspace_id=workspace_id).delete()
        StatementLine.objects.filter(statement__workspace_id=workspace_id).delete()
        for kind in ("credit_note", "invoice"):  # a credit note protects the invoice it cancels
            Invoice.objects.filter(statement__workspace_id=workspace_id, kind=kind).delete()
        Statement.objects.filter(workspace_id=workspace_id).delete()
        Budget.objects.filter(workspace_id=workspace_id).delete()
        ApiKey.objects.filter(workspace_id=workspace_id).delete()
        Membership.objects.filter(workspace_id=workspace_id).delete()
        Workspace.objects.filter(pk=workspace_id).delete()


# --- By the thousand (the close benchmark: PostgreSQL) ----------------------------------------------


def bulk_counts(cursor, prefix: str, period: date) -> dict[str, int]:
    """The workspaces whose slug starts with `prefix` (their id range, API keys) and their events:
    in all, in `period`'s month, and as summed by their daily rollups."""
    start, end = period_bounds(period)
    cursor.execute(
        "SELECT count(*), coalesce(min(id), 0), coalesce(max(id), 0) FROM workspaces_workspace WHERE slug LIKE %s",
        [prefix + "%"],
    )
    workspaces, low, high = cursor.fetchone()
    counts = {"workspaces": workspaces, "low": low, "high": high, "events": 0, "in_period": 0, "rollup_events": 0,
              "keys": 0}
    if not workspaces:
        return counts
    cursor.execute("SELECT count(*) FROM workspaces_apikey WHERE workspace_id BETWEEN %s AND %s", [low, high])
    counts["keys"] = cursor.fetchone()[0]
    cursor.execute(
        "SELECT count(*), count(*) FILTER (WHERE occurred_at >= %s AND occurred_at < %s) "
        "FROM usage_usageevent WHERE workspace_id BETWEEN %s AND %s",
        [start, end, low, high],
    )
    counts["events"], counts["in_period"] = cursor.fetchone()
    cursor.execute("SELECT coalesce(sum(events), 0) FROM usage_dailyrollup WHERE workspace_id BETWEEN %s AND %s",
                   [low, high])
    counts["rollup_events"] = int(cursor.fetchone()[0])
    return counts


def delete_statements(cursor, low: int, high: int, period: date | None = None) -> int:
    """The statements (lines, audit) of the bench workspaces: those of `period`, or all."""
    where = "workspace_id BETWEEN %s AND %s" + (" AND period = %s" if period else "")
    params = [low, high] + ([period] if period else [])
    scope = f"SELECT id FROM billing_statement WHERE {where}"
    cursor.execute(f"DELETE FROM billing_statementline WHERE statement_id IN ({scope})", params)
    cursor.execute(f"DELETE FROM billing_statementaudit WHERE statement_id IN ({scope})", params)
    cursor.execute(f"DELETE FROM billing_paymentattempt WHERE statement_id IN ({scope})", params)
    for kind in ("credit_note", "invoice"):  # a credit note protects the invoice it cancels
        cursor.execute(f"DELETE FROM billing_invoice WHERE kind = %s AND statement_id IN ({scope})", [kind, *params])
    cursor.execute(f"DELETE FROM billing_statement WHERE {where}", params)
    return cursor.rowcount


def bulk_clear(cursor, low: int, high: int) -> int:
    """Empty the workspaces low..high of what they hold (statements, events, their receipts, rollups),
    keeping the workspaces and their keys. Returns events deleted."""
    delete_statements(cursor, low, high)
    # When the ledger holds nothing but these workspaces' (the usual case in the bench's own
    # database), TRUNCATE: instant, where deleting 5 million rows takes minutes.
    cursor.execute("SELECT count(*) FROM usage_usageevent WHERE workspace_id BETWEEN %s AND %s", [low, high])
    deleted = cursor.fetchone()[0]
    cursor.execute(
        "SELECT EXISTS (SELECT 1 FROM usage_usageevent WHERE workspace_id NOT BETWEEN %s AND %s) "
        "OR EXISTS (SELECT 1 FROM usage_dailyrollup WHERE workspace_id NOT BETWEEN %s AND %s) "
        "OR EXISTS (SELECT 1 FROM usage_eventreceipt WHERE workspace_id NOT BETWEEN %s AND %s)",
        [low, high, low, high, low, high],
    )
    if cursor.fetchone()[0]:
        for table in ("usage_dailyrollup", "usage_eventreceipt", "usage_usageevent"):
            cursor.execute(f"DELETE FROM {table} WHERE workspace_id BETWEEN %s AND %s", [low, high])
    else:
        cursor.execute("TRUNCATE usage_dailyrollup, usage_eventreceipt, usage_usageevent")
    return deleted


def bulk_delete(cursor, prefix: str) -> int:
    """Remove every bench workspace whose slug starts with `prefix` and everything hanging off it.
    Returns events deleted."""
    cursor.execute("SELECT coalesce(min(id), 0), coalesce(max(id), 0) FROM workspaces_workspace WHERE slug LIKE %s",
                   [prefix + "%"])
    low, high = cursor.fetchone()
    if not high:
        return 0
    deleted = bulk_clear(cursor, low, high)
    # The range holds only bench workspaces (inserted in one statement), but go by slug to be sure.
    ids = f"SELECT id FROM workspaces_workspace WHERE slug LIKE %s AND id BETWEEN {int(low)} AND {int(high)}"
    for name in ("workspaces_apikey", "workspaces_membership", "billing_planassignment", "billing_discount"):
        cursor.execute(f"DELETE FROM {name} WHERE workspace_id IN ({ids})", [prefix + "%"])
    cursor.execute(f"DELETE FROM workspaces_workspace WHERE id IN ({ids})", [prefix + "%"])
    return deleted


def bulk_insert(cursor, prefix: str, count: int, *, label: str = "Close bench") -> dict[int, int]:
    """Workspaces (named `label` n) and one API key each, bulk: workspace id -> API key id. The keys
    can never authenticate (their hash is no SHA-256 of anything)."""
    cursor.execute(
        "INSERT INTO workspaces_workspace (name, slug, timezone, created_at) "
        "SELECT %s || ' ' || g, %s || lpad(g::text, 6, '0'), 'UTC', now() "
        "FROM generate_series(1, %s) AS g ORDER BY g",
        [label, prefix, count],
    )
    key_prefix = label.lower().replace(" ", "")
    cursor.execute(
        "INSERT INTO workspaces_apikey (workspace_id, name, prefix, secret_hash, scopes, created_at) "
        "SELECT id, lower(%s), %s || id, 'not-a-secret', '[\"usage:write\"]'::jsonb, now() "
        "FROM workspaces_workspace WHERE slug LIKE %s ORDER BY id RETURNING workspace_id, id",
        [label, key_prefix, prefix + "%"],
    )
    return dict(cursor.fetchall())

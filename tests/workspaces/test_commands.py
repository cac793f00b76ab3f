"""manage.py create_workspace and create_api_key, as an operator uses them."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from tests.conftest import client_with
from workspaces.models import ApiKey, Membership, Workspace

QUOTE_SDXL_50_1024x1824 = {
    "feature": "generation",
    "model": "sdxl",
    "steps": 50,
    "width": 1024,
    "height": 1824,
}  # $0.169, a cell of the seed table


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def create_key(*args: str) -> tuple[str, str]:
    """Run create_api_key; return (stdout, the secret from its last line)."""
    out = run("create_api_key", *args)
    return out, out.rstrip("\n").splitlines()[-1]


# --- create_workspace ----------------------------------------------------------------------------


def test_create_workspace_prints_the_slug_and_creates_the_owner(db):
    out = run("create_workspace", "initech", "--owner", "Bill@Initech.test", "--name", "Initech")

    assert out.strip() == "initech"
    workspace = Workspace.objects.get(slug="initech")
    assert workspace.name == "Initech"
    membership = Membership.objects.get(workspace=workspace)
    assert membership.role == Membership.Role.OWNER
    assert membership.user.username == membership.user.email == "bill@initech.test"


def test_create_workspace_twice_changes_nothing(db):
    run("create_workspace", "initech", "--owner", "bill@initech.test")
    out = run("create_workspace", "initech", "--owner", "bill@initech.test")

    assert out.strip() == "initech"
    assert Workspace.objects.filter(slug="initech").count() == 1
    assert Membership.objects.filter(workspace__slug="initech").count() == 1


@pytest.mark.parametrize(
    ("slug", "owner", "message"),
    [("not a slug!", "bill@initech.test", "slug"), ("initech", "not-an-email", "e-mail|email")],
)
def test_create_workspace_refuses_a_bad_slug_or_email(db, slug, owner, message):
    with pytest.raises(CommandError, match=message):
        run("create_workspace", slug, "--owner", owner)
    assert not Workspace.objects.exists()


# --- create_api_key ------------------------------------------------------------------------------


def test_create_api_key_prints_the_secret_alone_on_the_last_line(workspace):
    out, secret = create_key("acme", "--name", "render farm")

    key = ApiKey.objects.get(workspace=workspace, name="render farm")
    assert secret.startswith(f"mbk_{key.prefix}_")
    assert secret == secret.strip() and " " not in secret
    assert f"({key.display_prefix})" in out
    assert out.count(secret) == 1


def test_create_api_key_stores_only_a_hash_of_the_secret(workspace):
    _, secret = create_key("acme", "--name", "render farm")

    key = ApiKey.objects.get(name="render farm")
    assert key.secret_hash != secret
    random_part = secret.rsplit("_", 1)[1]
    table = connection.ops.quote_name(ApiKey._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table} WHERE id = %s", [key.pk])
        columns = [column[0] for column in cursor.description]
        row = cursor.fetchone()
    for column, value in zip(columns, row, strict=True):
        assert random_part not in str(value), f"the secret is readable in column {column}"


def test_create_api_key_grants_every_scope_by_default(workspace):
    out, _ = create_key("acme", "--name", "everything")

    key = ApiKey.objects.get(name="everything")
    assert set(key.scopes) == {"usage:write", "usage:read", "budgets:write", "billing:write"}
    assert "Scopes: " in out


def test_create_api_key_scopes_restrict_what_the_key_may_do(workspace):
    out, secret = create_key("acme", "--name", "generators", "--scopes", "usage:write")

    assert ApiKey.objects.get(name="generators").scopes == ["usage:write"]
    assert "Scopes: usage:write\n" in out
    api = client_with(secret)
    assert api.post("/api/v1/quote", QUOTE_SDXL_50_1024x1824, format="json").status_code == 200
    assert api.get("/api/v1/usage").status_code == 403


def test_a_key_lacking_a_scope_is_told_which_one(workspace):
    _, secret = create_key("acme", "--name", "generators", "--scopes", "usage:write")

    response = client_with(secret).get("/api/v1/usage")

    assert response.status_code == 403
    assert "'usage:read'" in response.json()["detail"]


def test_create_api_key_refuses_an_unknown_scope(workspace):
    with pytest.raises(CommandError, match=r"Unknown scope\(s\): usage:delete\. Choose from: usage:write"):
        create_key("acme", "--name", "bad", "--scopes", "usage:write", "usage:delete")
    assert not ApiKey.objects.exists()


def test_create_api_key_refuses_an_unknown_workspace(db):
    with pytest.raises(CommandError, match=r"No workspace 'nope'.*manage\.py create_workspace nope --owner"):
        create_key("nope", "--name", "bad")
    assert not ApiKey.objects.exists()


def test_the_printed_secret_authenticates(workspace):
    _, secret = create_key("acme", "--name", "render farm")

    response = client_with(secret).post("/api/v1/quote", QUOTE_SDXL_50_1024x1824, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["amount"] == "0.169000"
    forged = client_with(secret + "x")
    assert forged.post("/api/v1/quote", QUOTE_SDXL_50_1024x1824, format="json").status_code == 401

"""Which workspace is current: one rule (workspaces.access.workspace_for), two callers that answer
its refusals in their own way, the API (JSON 400/404/403) and the dashboard's pages (HTML)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

from workspaces.access import (
    MANAGE,
    OWNER,
    READ,
    STAFF,
    InvalidSlug,
    NotAMember,
    NoWorkspace,
    RoleRefused,
    StaffReadOnly,
    Unnamed,
    workspace_for,
)
from workspaces.models import Membership, Workspace
from workspaces.services import workspace_create

PASSWORD = "pw-123456!"


def user(email: str, *, staff: bool = False, **roles: str):
    """A person, member of each workspace named (by slug) with the role given."""
    person = get_user_model().objects.create_user(email, email, PASSWORD, is_staff=staff)
    for slug, role in roles.items():
        Membership.objects.create(workspace=Workspace.objects.get(slug=slug), user=person, role=role)
    return person


@pytest.fixture
def initech(db):
    return workspace_create(slug="initech", owner_email="owner@initech.test", name="Initech")


# --- The rule ------------------------------------------------------------------------------------------


def test_a_named_workspace_of_the_person_is_chosen_with_their_role(workspace, other_workspace):
    viewer = user("v@x.test", acme="viewer", globex="admin")
    choice = workspace_for(viewer, "globex")
    assert (choice.workspace, choice.role) == (other_workspace, "admin")
    assert [m.workspace.slug for m in choice.memberships] == ["acme", "globex"]  # by name, for the switcher
    assert workspace_for(viewer, "globex", needs=MANAGE).workspace == other_workspace


@pytest.mark.parametrize("slug", ["\x00", "a" * 65, "ünïcode", "a b", "x/y"])
def test_a_slug_that_could_name_no_workspace_is_refused_before_any_lookup(
    workspace, slug, django_assert_num_queries
):
    staff = user("s@x.test", staff=True)
    with django_assert_num_queries(0), pytest.raises(InvalidSlug):
        workspace_for(staff, slug)


def test_not_a_member_is_the_same_refusal_whether_the_workspace_exists_or_not(workspace, other_workspace):
    viewer = user("v@x.test", acme="viewer")
    with pytest.raises(NotAMember) as existing:
        workspace_for(viewer, "globex")
    with pytest.raises(NotAMember) as missing:
        workspace_for(viewer, "no-such")
    assert str(existing.value).replace("globex", "X") == str(missing.value).replace("no-such", "X")


def test_staff_read_any_workspace_and_change_none_they_are_not_in(workspace):
    staff = user("s@x.test", staff=True)
    choice = workspace_for(staff, "acme")
    assert (choice.workspace, choice.role, choice.is_staff_view) == (workspace, STAFF, True)
    for needs in (MANAGE, OWNER):
        with pytest.raises(StaffReadOnly) as refused:
            workspace_for(staff, "acme", needs=needs)
        assert refused.value.choice.workspace == workspace
    with pytest.raises(NotAMember):
        workspace_for(staff, "no-such")


def test_staff_who_are_members_have_their_role(workspace):
    staff = user("s@x.test", staff=True, acme="viewer")
    assert workspace_for(staff, "acme").role == "viewer"
    with pytest.raises(RoleRefused) as refused:
        workspace_for(staff, "acme", needs=MANAGE)
    assert not isinstance(refused.value, StaffReadOnly)


def test_roles_viewers_read_admins_manage_owners_own(workspace):
    viewer, admin, owner = (
        user("v@x.test", acme="viewer"),
        user("a@x.test", acme="admin"),
        user("o@x.test", acme="owner"),
    )
    assert workspace_for(viewer, "acme", needs=READ).role == "viewer"
    with pytest.raises(RoleRefused, match="owners and admins"):
        workspace_for(viewer, "acme", needs=MANAGE)
    assert workspace_for(admin, "acme", needs=MANAGE).role == "admin"
    with pytest.raises(RoleRefused, match="Only the workspace's owners may do this."):
        workspace_for(admin, "acme", needs=OWNER)
    assert workspace_for(owner, "acme", needs=OWNER).role == "owner"


def test_without_a_slug_the_remembered_else_the_only_else_the_first_or_ask(
    workspace, other_workspace, initech
):
    one = user("one@x.test", globex="viewer")
    assert workspace_for(one, None).workspace == other_workspace
    assert workspace_for(one, "").workspace == other_workspace
    several = user("several@x.test", globex="viewer", initech="owner", acme="admin")
    with pytest.raises(Unnamed):
        workspace_for(several, None)  # the API: name one
    assert workspace_for(several, None, pick_first=True).workspace == workspace  # pages: by name, Acme first
    assert workspace_for(several, None, remembered="initech", pick_first=True).workspace == initech
    assert workspace_for(several, None, remembered="initech").workspace == initech
    assert workspace_for(several, None, remembered="no-longer-mine", pick_first=True).workspace == workspace
    assert workspace_for(several, "globex", remembered="initech").workspace == other_workspace  # a slug wins


def test_a_person_in_no_workspace(workspace):
    nobody = user("nobody@x.test")
    for pick_first in (False, True):
        with pytest.raises(NoWorkspace):
            workspace_for(nobody, None, pick_first=pick_first)
    with pytest.raises(NotAMember):
        workspace_for(nobody, "acme")


# --- The API's answers ---------------------------------------------------------------------------------


def api_as(person) -> APIClient:
    client = APIClient()
    client.force_login(person)
    return client


def test_the_api_answers_the_rule_in_json(workspace, other_workspace):
    viewer = api_as(user("v@x.test", acme="viewer", globex="viewer"))
    assert viewer.get("/api/v1/budgets", {"workspace": "acme"}).status_code == 200
    invalid = viewer.get("/api/v1/budgets", {"workspace": "a b"})
    assert invalid.status_code == 400 and "workspace" in invalid.json()
    unnamed = viewer.get("/api/v1/budgets")
    assert unnamed.status_code == 400 and "workspace" in unnamed.json()
    assert viewer.get("/api/v1/budgets", {"workspace": "no-such"}).status_code == 404
    refused = viewer.post("/api/v1/budgets?workspace=acme", {"amount": "10"}, format="json")
    assert refused.status_code == 403 and "owners and admins" in refused.json()["detail"]
    nobody = api_as(user("nobody@x.test")).get("/api/v1/budgets")
    assert nobody.status_code == 400 and "not a member of any" in str(nobody.json())


def test_through_the_api_staff_changing_a_workspace_they_are_not_in_is_not_found(workspace):
    staff = api_as(user("s@x.test", staff=True))
    assert staff.get("/api/v1/budgets", {"workspace": "acme"}).status_code == 200
    existing = staff.post("/api/v1/budgets?workspace=acme", {"amount": "10"}, format="json")
    missing = staff.post("/api/v1/budgets?workspace=no-such", {"amount": "10"}, format="json")
    assert existing.status_code == missing.status_code == 404


# --- The pages' answers ---------------------------------------------------------------------------------


def pages_as(person) -> Client:
    client = Client()
    client.force_login(person)
    return client


def test_the_pages_answer_the_rule_in_html(workspace, other_workspace):
    viewer = pages_as(user("v@x.test", acme="viewer", globex="viewer"))
    assert viewer.get("/keys/", {"workspace": "acme"}).status_code == 200
    invalid = viewer.get("/keys/", {"workspace": "a b"})
    assert invalid.status_code == 400 and "Not a workspace slug" in invalid.content.decode()
    assert viewer.get("/keys/").status_code == 200  # no slug: the remembered one, else the first
    assert viewer.get("/keys/", {"workspace": "no-such"}).status_code == 404
    refused = viewer.post("/keys/create/?workspace=globex", {"name": "x", "scopes": ["usage:read"]})
    assert refused.status_code == 403 and "owners and admins" in refused.content.decode()
    assert pages_as(user("nobody2@x.test")).get("/").status_code == 200  # the no-workspace page
    assert pages_as(user("staff@x.test", staff=True)).get("/").url == "/staff/"


def test_the_pages_remember_the_chosen_workspace_even_on_a_refused_change(workspace, other_workspace):
    viewer = pages_as(user("v@x.test", acme="viewer", globex="viewer"))
    assert (
        viewer.post("/keys/create/?workspace=globex", {"name": "x", "scopes": ["usage:read"]}).status_code
        == 403
    )
    assert viewer.session["dashboard_workspace"] == "globex"
    assert '<option value="globex" selected>' in viewer.get("/keys/").content.decode()


def test_staff_reading_a_page_are_not_remembered_and_change_nothing(workspace, other_workspace):
    staff = pages_as(user("s@x.test", staff=True, globex="viewer"))
    assert staff.get("/keys/", {"workspace": "globex"}).status_code == 200
    page = staff.get("/keys/", {"workspace": "acme"})
    assert page.status_code == 200 and "Staff (read-only)" in page.content.decode()
    assert staff.session["dashboard_workspace"] == "globex"
    assert (
        staff.post("/keys/create/?workspace=acme", {"name": "x", "scopes": ["usage:read"]}).status_code == 403
    )
    assert (
        staff.post("/keys/create/?workspace=no-such", {"name": "x", "scopes": ["usage:read"]}).status_code
        == 404
    )

"""Accessibility (issue 16, part 4): axe-core finds no serious or critical violation on any page, at
a desktop's and a phone's width; sign-in, creating a budget and creating a key work with the
keyboard alone; every chart points at the table of its numbers.

axe-core is vendored in tests/dashboard/vendor/ (axe.min.js and its licence, from
`npm pack axe-core@4.14.1`): the tests make no network call. It is injected as an init script
(Playwright adds it through the DevTools protocol, so the page's strict CSP is untouched).
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from budgets.models import Budget
from tests.dashboard.conftest import PASSWORD, last_month_day, person, sign_in
from workspaces.models import ApiKey

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
WIDTHS = (1280, 390)


@pytest.fixture
def axe_page(page):
    """The `page` fixture with axe-core loaded into every document it opens."""
    page.add_init_script(path=str(AXE))
    return page


# Moderate in axe's terms, fixed all the same and kept fixed: content outside landmarks (the test-mode
# banner was) and two landmarks of the same name (two scrolling tables).
ALSO_KEPT_AT_ZERO = ("region", "landmark-unique")


def serious_violations(page) -> list[str]:
    """axe's serious and critical findings on the page (and ALSO_KEPT_AT_ZERO), one line per
    element. Every <details> is opened first, so that what it hides (the charts' tables, a pending
    month's lines) is checked too."""
    page.wait_for_load_state("load")
    results = page.evaluate(
        """async (alsoRules) => {
        document.querySelectorAll("details").forEach((details) => { details.open = true; });
        await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
        const results = await axe.run(document, {resultTypes: ["violations"]});
        return results.violations
            .filter((v) => v.impact === "serious" || v.impact === "critical" || alsoRules.includes(v.id))
            .map((v) => ({id: v.id, help: v.help, nodes: v.nodes.map((n) => n.target.join(" ") + " — " + n.failureSummary)}));
    }""",
        list(ALSO_KEPT_AT_ZERO),
    )
    return [f"{v['id']} ({v['help']}): {node}" for v in results for node in v["nodes"]]


def test_axe_finds_nothing_serious_on_any_page_at_desktop_and_phone_width(axe_page, owner, every_page):
    page = axe_page
    found = {}
    signed_out = ["/login/", "/password-reset/", "/password-reset/sent/", "/password-reset/done/"]
    errors = [("a bad request", "/usage/?workspace=not%20a%20slug!", 400),
              ("not found", "/statements/999999/?workspace=acme", 404)]  # fmt: skip
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.context.clear_cookies()
        for path in signed_out:
            assert page.goto(page.base_url + path).status == 200, path
            found[f"{path} at {width}px"] = serious_violations(page)
        sign_in(page, "owner@acme.test")
        for name, path in every_page:
            assert page.goto(page.base_url + path).status == 200, path
            if name.startswith("overview"):
                page.wait_for_selector("#chart-daily[data-drawn]")  # plotly's toolbar is in the page
            if name == "payment":
                page.wait_for_selector("#card-element input")
            found[f"{name} at {width}px"] = serious_violations(page)
        for name, path, status in errors:
            assert page.goto(page.base_url + path).status == status, path
            found[f"{name} at {width}px"] = serious_violations(page)
        page.console_errors.clear()  # the browser logs the 400 and the 404
    page.context.clear_cookies()
    person("nobody@acme.test")  # signed in, member of no workspace
    sign_in(page, "nobody@acme.test")
    assert "workspace" in page.locator("main").inner_text()
    found["no workspace"] = serious_violations(page)
    page.context.clear_cookies()
    person("staff@meterboard.test", staff=True)
    sign_in(page, "staff@meterboard.test")
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(page.base_url + "/staff/")
        found[f"staff at {width}px"] = serious_violations(page)
    problems = {where: lines for where, lines in found.items() if lines}
    assert not problems, "\n".join(f"{where}:\n  " + "\n  ".join(lines) for where, lines in problems.items())
    assert (
        len(found) == 2 * (len(signed_out) + len(every_page) + len(errors) + 1) + 1
    )  # every page was checked


# --- The keyboard alone: Tab, Enter, Space and typing; no click anywhere ----------------------------


def tab_to(page, selector: str, limit: int = 80) -> int:
    """Press Tab until the focus is on `selector` (forward from where it is: the tab order must
    reach it), and check that the focus shows; returns how many presses it took."""
    for presses in range(1, limit + 1):
        page.keyboard.press("Tab")
        if page.evaluate("(selector) => document.activeElement.matches(selector)", selector):
            ring = page.evaluate("""() => { const style = getComputedStyle(document.activeElement);
                return style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0 || style.boxShadow !== "none"; }""")
            assert ring, f"{selector} has the focus but shows no focus ring"
            return presses
    focused = page.evaluate("() => document.activeElement.outerHTML.slice(0, 120)")
    raise AssertionError(f"{limit} presses of Tab never reached {selector} (the focus is on {focused})")


def keyboard_sign_in(page, email: str) -> None:
    page.goto(page.base_url + "/login/")
    assert page.evaluate("() => document.activeElement.id") == "id_username"  # autofocus: type at once
    page.keyboard.type(email)
    tab_to(page, "#id_password")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: "/login/" not in url)


def test_sign_in_with_the_keyboard_and_skip_to_the_content(page, owner, usage):
    keyboard_sign_in(page, "owner@acme.test")
    assert page.get_by_role("heading", level=1).is_visible()
    assert tab_to(page, "a.skip-link") == 1, "the skip link is the first stop"
    assert page.locator("a.skip-link").is_visible()
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "main"
    # From the content, the next stop is in the content, not back in the navigation.
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.getElementById('main').contains(document.activeElement)")


def test_a_wrong_password_is_announced_and_the_keyboard_can_try_again(page, owner):
    page.goto(page.base_url + "/login/")
    page.keyboard.type("owner@acme.test")
    tab_to(page, "#id_password")
    page.keyboard.type("not the password")
    page.keyboard.press("Enter")
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "do not match" in alert.inner_text()
    # The focus is back in the form, the address kept: Tab, the password, Enter.
    assert page.evaluate("() => document.activeElement.id") == "id_username"
    assert page.locator("#id_username").input_value() == "owner@acme.test"
    tab_to(page, "#id_password")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: "/login/" not in url)


def test_create_a_key_with_the_keyboard(page, browser_context, owner, workspace, usage):
    browser_context.grant_permissions(["clipboard-read", "clipboard-write"], origin=page.base_url)
    keyboard_sign_in(page, "owner@acme.test")
    tab_to(page, "nav.tabs a[href^='/keys/']")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/keys/"))
    tab_to(page, "#id_name")
    page.keyboard.type("render farm")
    tab_to(page, "#create-key")
    page.keyboard.press("Enter")
    page.wait_for_selector("#new-secret")
    secret = page.locator("#new-secret").input_value()
    key = ApiKey.objects.get(workspace=workspace, name="render farm")
    assert secret.startswith("mbk_") and key.revoked_at is None
    # The secret is copied with the keyboard too.
    tab_to(page, "button[data-copy]")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('button[data-copy]').textContent === 'Copied'")
    assert page.evaluate("() => navigator.clipboard.readText()") == secret


def test_create_a_budget_with_the_keyboard_fixing_a_mistake_on_the_way(page, owner, workspace, usage):
    keyboard_sign_in(page, "owner@acme.test")
    tab_to(page, "nav.tabs a[href^='/budgets/']")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/budgets/"))
    tab_to(page, "#id_amount")
    page.keyboard.type("10")
    tab_to(page, "#id_thresholds")
    page.keyboard.press("ControlOrMeta+A")
    page.keyboard.type("fifty, 100")
    tab_to(page, "#id_hard_limit")
    page.keyboard.press("Space")
    tab_to(page, "#create-budget")
    page.keyboard.press("Enter")
    # The error is announced, and the focus is on the field to fix, which points at the error.
    page.get_by_role("alert").wait_for()
    assert "Thresholds" in page.get_by_role("alert").inner_text()
    assert not Budget.objects.filter(workspace=workspace).exists()
    page.console_errors.clear()  # the browser logs the form's 400
    focused = page.evaluate("""() => ({id: document.activeElement.id, invalid: document.activeElement.getAttribute("aria-invalid"),
                                       described: document.activeElement.getAttribute("aria-describedby")})""")
    assert (
        focused["id"] == "id_thresholds"
        and focused["invalid"] == "true"
        and "budget-errors" in focused["described"]
    )
    page.keyboard.press("ControlOrMeta+A")
    page.keyboard.type("50, 100")
    page.keyboard.press("Enter")  # submits the form from the text box; what was typed before is kept
    page.wait_for_selector("[data-budget]")
    budget = Budget.objects.get(workspace=workspace)
    assert budget.amount == Decimal("10") and budget.thresholds == [50, 100] and budget.hard_limit
    assert "$7.78 spent this month (77.8 %)" in page.locator(f"[data-budget='{budget.pk}']").inner_text()


def focused_field(page) -> dict:
    return page.evaluate("""() => {
        const field = document.activeElement, described = field.getAttribute("aria-describedby") || "";
        const lists = described.split(" ").map((id) => document.getElementById(id)).filter((el) => el && el.matches("ul.errorlist"));
        return {id: field.id, invalid: field.getAttribute("aria-invalid"), lists: lists.map((l) => l.id),
                roles: lists.map((l) => l.getAttribute("role")), errors: lists.map((l) => l.innerText)};
    }""")


@pytest.mark.parametrize(
    ("name", "error"),
    [("   ", "Name: This field is required."), ("x" * 101, "Name: Ensure this value has at most 100 characters")],
    ids=["blank", "too long"],
)
def test_a_key_name_sent_back_with_an_error_is_announced_and_focused(page, owner, workspace, name, error):
    sign_in(page, "owner@acme.test")
    page.goto(f"{page.base_url}/keys/?workspace=acme")
    # The input's maxlength stops typing past 100, not a forged or pasted value: set it as a script would.
    page.locator("#id_name").evaluate("(input, name) => { input.removeAttribute('maxlength'); input.value = name; }", name)
    page.get_by_role("button", name="Create key").click()
    page.get_by_role("alert").wait_for()
    page.console_errors.clear()  # the browser logs the form's 400
    assert not ApiKey.objects.filter(workspace=workspace).exists()
    focused = focused_field(page)
    assert focused["id"] == "id_name" and focused["invalid"] == "true", focused
    assert focused["lists"] == ["key-errors"] and focused["roles"] == ["alert"], focused
    assert error in focused["errors"][0], focused
    assert "name-help" in page.locator("#id_name").get_attribute("aria-describedby"), "the help is still read"
    # Fixed where it is, it goes through.
    page.keyboard.press("ControlOrMeta+A")
    page.keyboard.type("render farm")
    page.keyboard.press("Enter")
    page.wait_for_selector("#new-secret")
    assert ApiKey.objects.get(workspace=workspace).name == "render farm"
    assert page.locator("#id_name").get_attribute("aria-invalid") is None


def test_each_chart_points_at_its_data_table(page, owner, usage):
    sign_in(page, "owner@acme.test")
    page.wait_for_selector("#chart-daily[data-drawn]")
    charts = page.evaluate("""() => [...document.querySelectorAll(".chart[id]")].map((chart) => {
        const table = document.getElementById(chart.getAttribute("aria-details"))?.querySelector("table");
        return {id: chart.id, role: chart.getAttribute("role"), label: chart.getAttribute("aria-label"),
                description: document.getElementById(chart.getAttribute("aria-describedby"))?.textContent.trim(),
                caption: table?.caption.textContent.trim(), rows: table ? table.tBodies[0].rows.length : 0};
    })""")
    assert [chart["id"] for chart in charts] == [
        "chart-daily", "chart-cumulative", "chart-model", "chart-resolution", "chart-steps", "chart-key"
    ]  # fmt: skip
    for chart in charts:
        assert chart["role"] == "figure", chart
        assert chart["caption"] and chart["label"].startswith(chart["caption"] + " chart"), chart
        assert chart["description"], chart  # the chart's caption, e.g. what a bar is
        assert chart["rows"] >= 1, chart
    # The table is one Enter away from the keyboard: its summary says what it holds.
    summary = page.locator("#chart-daily-numbers > summary")
    assert "data table" in summary.inner_text()
    summary.focus()
    page.keyboard.press("Enter")
    assert page.locator("#chart-daily-numbers table").is_visible()


# Content nobody foresaw: an unbreakable 300-character word in every table's first body cell.
OVERSIZE = """() => {
    document.querySelectorAll("main table tbody tr:first-child > :first-child").forEach((cell) => {
        cell.append(" " + "W".repeat(300));
    });
    window.dispatchEvent(new Event("resize"));
}"""


def test_a_table_wider_than_a_phone_scrolls_with_the_keyboard(page, owner, usage):
    """Tables fit a phone (test_responsive); the last resort for content that still does not
    fit: its box scrolls, and a keyboard can reach and scroll it."""
    sign_in(page, "owner@acme.test")
    page.set_viewport_size({"width": 390, "height": 900})
    page.goto(f"{page.base_url}/usage/?workspace=acme")
    assert page.locator("main .table-wrap[tabindex]").count() == 0  # everything fits: no extra tab stop
    page.evaluate(OVERSIZE)
    wrap = page.locator("main .table-wrap[data-keyboard-scroll]").first
    wrap.wait_for()
    assert wrap.get_attribute("tabindex") == "0" and wrap.get_attribute("role") == "region"
    assert "(scrolls sideways)" in wrap.get_attribute("aria-label")
    tab_to(page, "main .table-wrap[data-keyboard-scroll]")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("End")
    page.wait_for_function(
        "() => document.querySelector('main .table-wrap[data-keyboard-scroll]').scrollLeft > 0"
    )
    # Wide enough for the table again (the word gone): no extra tab stop.
    page.evaluate("""() => { document.querySelectorAll("main td, main th").forEach((cell) => {
        cell.childNodes.forEach((node) => { if (node.nodeType === 3 && node.textContent.includes("WWW")) node.remove(); });
    }); window.dispatchEvent(new Event("resize")); }""")
    page.wait_for_function("() => !document.querySelector('main .table-wrap[data-keyboard-scroll]')")
    assert page.locator("main .table-wrap[tabindex]").count() == 0


def test_the_scrolling_tables_of_a_statement_preview_have_names_of_their_own(page, owner, usage):
    sign_in(page, "owner@acme.test")
    page.set_viewport_size({"width": 390, "height": 900})
    page.goto(f"{page.base_url}/statements/preview/?workspace=acme")
    page.evaluate("() => document.querySelectorAll('details').forEach((details) => { details.open = true; })")
    page.evaluate(OVERSIZE)
    page.wait_for_function("() => document.querySelectorAll('.table-wrap[data-keyboard-scroll]').length >= 2")
    names = page.evaluate(
        "() => [...document.querySelectorAll('.table-wrap[data-keyboard-scroll]')].map((w) => w.getAttribute('aria-label'))"
    )
    assert len(names) == len(set(names)), names
    last_month = last_month_day().date().replace(day=1)
    assert any(name.startswith(f"{last_month:%B %Y} — pending close: ") for name in names), (
        names
    )  # not the badge


def test_a_new_workspaces_get_started_checklist_passes_axe_and_makes_a_key_with_the_keyboard(
    axe_page, owner, workspace
):
    page = axe_page
    keyboard_sign_in(page, "owner@acme.test")
    found = {}
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{page.base_url}/?workspace=acme")
        page.wait_for_selector("#get-started")
        found[f"checklist at {width}px"] = serious_violations(page)
    page.goto(f"{page.base_url}/?workspace=acme")
    tab_to(page, "#onboarding-key-name")
    page.keyboard.type("first servers")
    tab_to(page, "#get-started form button[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_selector("#new-secret")
    assert ApiKey.objects.get(workspace=workspace).name == "first servers"
    assert page.locator("#new-secret").input_value() in page.locator("#request-curl").inner_text()
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        found[f"checklist with the new key at {width}px"] = serious_violations(page)
    problems = {where: lines for where, lines in found.items() if lines}
    assert not problems, "\n".join(f"{where}:\n  " + "\n  ".join(lines) for where, lines in problems.items())

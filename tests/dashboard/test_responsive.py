"""Responsive pages (issue 16, part 3): at any width from a small phone's to a wide desktop's, no
table is wider than its container, no page scrolls sideways, and no amount is cut; on a phone the
workspace's pages are one tap on the menu away.

Every page of test_accessibility's list is loaded once and measured at each width (the viewport is
resized in place: the layout must follow a rotated phone or a resized window, not only a first
load), every <details> open, so the tables they hide are measured too. The content is made long on
purpose: names, ids, notes and URLs at or near their maximum length.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.credits import credits_grant
from notifications.services import endpoint_create
from tests.conftest import event, ingest
from tests.dashboard.conftest import person, sign_in
from workspaces.models import Membership
from workspaces.services import api_key_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

# The three, and both ends of its range, and a tablet's landscape width.
WIDTHS = (360, 768, 1024, 1400, 1920)

# Plotly redraws a responsive chart a moment after the window's resize (as a person sees it).
CHARTS_FOLLOWED = """() => [...document.querySelectorAll(".js-plotly-plot")].every((plot) =>
    plot.querySelector(".main-svg").getBoundingClientRect().width <= plot.clientWidth + 1)"""

MEASURE = """async () => {
    document.querySelectorAll("details").forEach((details) => { details.open = true; });
    // The page's script re-lays its tables out on the next frame (a toggle, a resize): let it.
    for (let frame = 0; frame < 3; frame++) await new Promise((done) => requestAnimationFrame(done));
    const problems = [];
    const name = (el) => {
        const table = el.closest("table");
        const id = table && (table.id || table.className || (table.querySelector("caption") || {}).textContent);
        return (id ? `table ${String(id).trim().slice(0, 60)}` : el.tagName.toLowerCase());
    };
    const clipped = (el) => {  // inside a visually hidden box (.sr-only, a stacked table's thead)
        for (let node = el; node && node !== document.body; node = node.parentElement) {
            if (getComputedStyle(node).clip !== "auto") return true;
        }
        return false;
    };
    const visible = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden" && !clipped(el);
    const root = document.documentElement;
    if (root.scrollWidth > window.innerWidth + 1) {
        const wide = [...document.querySelectorAll("main *")].filter(visible)
            .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 1)
            .map((el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + (el.className ? "." + String(el.className).split(" ")[0] : ""));
        problems.push(`the page is ${root.scrollWidth}px wide in a ${window.innerWidth}px window (${wide.slice(0, 4).join(", ")})`);
    }
    for (const table of document.querySelectorAll("table")) {
        if (!visible(table)) continue;
        const container = table.parentElement;
        const width = table.getBoundingClientRect().width, room = container.clientWidth;
        if (width > room + 1) problems.push(`${name(table)} is ${Math.round(width)}px wide in ${room}px`);
        const card = table.closest(".card, main");
        if (card && table.getBoundingClientRect().right > card.getBoundingClientRect().right + 1) {
            problems.push(`${name(table)} sticks out of its card`);
        }
    }
    for (const cell of document.querySelectorAll("td.num, th.num")) {
        if (!visible(cell)) continue;
        if (cell.scrollWidth > cell.clientWidth + 1) problems.push(`${name(cell)}: "${cell.textContent.trim()}" is cut`);
        if (getComputedStyle(cell).textAlign !== "right") problems.push(`${name(cell)}: "${cell.textContent.trim()}" is not right-aligned`);
    }
    return problems;
}"""


@pytest.fixture
def long_content(workspace, api_key, usage, owner, settings):
    """What makes tables wide in real life: a key's name at its 100 characters, event ids at their
    128, SDXL with composition on spot, a webhook URL of 200 characters, a long note, an address."""
    long_key = api_key_create(
        workspace=workspace, name=("production image pipeline, eu-west-1 render farm " * 3)[:100]
    ).api_key
    now = timezone.now().replace(microsecond=0)
    ingest(workspace, long_key, [
        event(event_id="evt-" + "0123456789abcdef" * 7 + "0123", occurred_at=now.isoformat(), model="sdxl", steps=50,
              width=1024, height=1824, composition_control=True, spot=True, quantity=1234),
        event(event_id="batch/2026/11/" + "x" * 114, occurred_at=(now - timedelta(minutes=1)).isoformat(), quantity=98765),
    ])  # fmt: skip
    settings.WEBHOOK_ALLOW_PRIVATE = True  # a loopback URL: no name to resolve, nothing listens
    endpoint_create(workspace_id=workspace.pk, url="http://127.0.0.1:9/hooks/" + "meterboard/" * 15 + "end")
    credits_grant(
        workspace, Decimal("1234567.89"), actor="staff", note="Goodwill for the October outage. " * 9
    )
    person("a.very.long.name.for.an.engineer.in.the.platform.team@subsidiary.example.com",
           workspace=workspace, role=Membership.Role.ADMIN)  # fmt: skip


def test_no_table_wider_than_its_container_at_any_width(page, every_page, long_content):
    sign_in(page, "owner@acme.test")
    found = {}
    for name, path in every_page:
        page.set_viewport_size({"width": WIDTHS[-1], "height": 900})
        assert page.goto(page.base_url + path).status == 200, path
        for width in reversed(WIDTHS):
            page.set_viewport_size({"width": width, "height": 900})
            page.wait_for_function(CHARTS_FOLLOWED)
            found[f"{name} at {width}px"] = page.evaluate(MEASURE)
    page.context.clear_cookies()
    for path in ("/login/", "/password-reset/"):
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 900})
            page.goto(page.base_url + path)
            found[f"{path} at {width}px"] = page.evaluate(MEASURE)
    problems = {where: lines for where, lines in found.items() if lines}
    assert not problems, "\n".join(f"{where}:\n  " + "\n  ".join(lines) for where, lines in problems.items())
    assert len(found) == len(WIDTHS) * (len(every_page) + 2)


def test_the_staff_page_fits_a_phone(page, every_page, long_content):
    person("staff@meterboard.test", staff=True)
    sign_in(page, "staff@meterboard.test")
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(page.base_url + "/staff/")
        assert page.evaluate(MEASURE) == [], f"at {width}px"


PAGES = [
    "Overview",
    "Usage",
    "Statements",
    "Budgets",
    "Events",
    "API keys",
    "Members",
    "Payment",
    "Credits",
    "Billing details",
]


def links_on_screen(page) -> list[str]:
    """The workspace pages' links a person can see and tap: shown, inside the window, not covered."""
    return page.evaluate("""() => [...document.querySelectorAll("nav.tabs .tabs-list a")].filter((a) => {
        const box = a.getBoundingClientRect();
        if (!box.width || box.left < 0 || box.right > window.innerWidth) return false;
        return document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2)?.closest("a") === a;
    }).map((a) => a.textContent.trim())""")


def test_the_pages_menu_on_a_phone(page, owner, usage):
    page.set_viewport_size({"width": 360, "height": 740})
    sign_in(page, "owner@acme.test")
    toggle = page.locator("nav.tabs .tabs-toggle")
    assert toggle.is_visible() and toggle.get_attribute("aria-expanded") == "false"
    assert "Overview" in toggle.inner_text()  # where you are, at a glance
    assert links_on_screen(page) == []  # folded: the page starts with its content, not ten links
    toggle.click()
    assert toggle.get_attribute("aria-expanded") == "true"
    assert links_on_screen(page) == PAGES  # every page, on screen, tappable
    heights = page.evaluate(
        "() => [...document.querySelectorAll('nav.tabs .tabs-list a')].map((a) => a.getBoundingClientRect().height)"
    )
    assert min(heights) >= 24  # WCAG 2.5.8's minimum target size
    page.keyboard.press("Escape")
    assert toggle.get_attribute("aria-expanded") == "false" and links_on_screen(page) == []
    assert page.evaluate("() => document.activeElement.classList.contains('tabs-toggle')")
    toggle.click()
    page.get_by_role("link", name="Budgets", exact=True).click()
    page.wait_for_url("**/budgets/**")
    assert "Budgets" in page.locator("nav.tabs .tabs-toggle").inner_text()
    # Turned to landscape on a tablet, the menu is the usual row of tabs again.
    page.set_viewport_size({"width": 1024, "height": 740})
    assert not page.locator("nav.tabs .tabs-toggle").is_visible()
    assert links_on_screen(page) == PAGES


def test_without_scripts_every_page_link_shows_on_a_phone(chromium, live_server, owner, usage):
    context = chromium.new_context(viewport={"width": 360, "height": 740}, java_script_enabled=False)
    try:
        page = context.new_page()
        page.base_url = live_server.url
        sign_in(page, "owner@acme.test")
        assert not page.locator("nav.tabs .tabs-toggle").is_visible()
        assert links_on_screen(page) == PAGES
    finally:
        context.close()


def test_a_new_workspaces_get_started_checklist_fits_every_width(page, owner, workspace):
    """The first page a newcomer sees, before and after its key (the requests then carry it)."""
    sign_in(page, "owner@acme.test")
    page.locator("#onboarding-key-name").fill("first servers")
    page.locator("#get-started form button[type=submit]").click()
    page.wait_for_selector("#new-secret")
    for width in reversed(WIDTHS):
        page.set_viewport_size({"width": width, "height": 900})
        assert page.evaluate(MEASURE) == [], f"at {width}px"


def test_a_chart_refits_its_legend_when_the_window_narrows_and_widens(page, owner, usage):
    """Drawn on a desktop, then the window is made a phone's width: the chart takes the phone's
    layout (smaller type, room for the wrapped legend), and back."""
    sign_in(page, "owner@acme.test")
    page.wait_for_selector("#chart-daily[data-drawn]")
    layout = "() => { const l = document.getElementById('chart-daily').layout; return [l.font.size, l.height]; }"
    wide_font, wide_height = page.evaluate(layout)
    page.set_viewport_size({"width": 390, "height": 900})
    page.wait_for_function("() => document.getElementById('chart-daily').layout.font.size === 11")
    assert page.evaluate(layout)[1] > wide_height  # the legend's rows are given back
    page.set_viewport_size({"width": 1280, "height": 900})
    page.wait_for_function(f"() => document.getElementById('chart-daily').layout.font.size === {wide_font}")
    assert page.evaluate(layout) == [wide_font, wide_height]

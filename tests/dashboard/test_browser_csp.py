"""The Content-Security-Policy (issue 9, finding 7) in a real Chromium: every page sends it, and
pages that run scripts (the API docs, the admin, the charts) still work under it."""

from __future__ import annotations

from django.contrib.auth import get_user_model

from tests.dashboard.conftest import PASSWORD


def test_the_api_docs_and_admin_run_under_the_policy_without_violations(page, db):
    response = page.goto(f"{page.base_url}/api/docs/")
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
    page.wait_for_selector(".swagger-ui .opblock", timeout=15_000)  # Swagger UI ran and drew the operations
    get_user_model().objects.create_superuser("boss@mb.test", "boss@mb.test", PASSWORD)
    page.goto(f"{page.base_url}/admin/login/")
    page.fill("#id_username", "boss@mb.test")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    page.goto(f"{page.base_url}/admin/billing/plan/add/")
    page.wait_for_selector("#plan_form")
    # The page fixture fails the test on any console error, CSP violations included.


def test_an_inline_script_is_refused(page, db):
    page.goto(f"{page.base_url}/login/")
    page.console_errors.clear()
    page.evaluate("""() => { const s = document.createElement('script'); s.textContent = 'window.__ran = 1';
                              document.body.appendChild(s); }""")
    assert page.evaluate("() => window.__ran") is None
    assert any("Content Security Policy" in error for error in page.console_errors)
    page.console_errors.clear()

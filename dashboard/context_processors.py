from billing.stripe_api import StripeMode, stripe_mode


def dashboard(request) -> dict:
    """`access` (the page's workspace and role, when it has one) for the layout's switcher and nav;
    `stripe_test_mode` ("simulator" or "test", else empty) for the test-mode banner of every page."""
    mode = stripe_mode()
    return {
        "access": getattr(request, "access", None),
        "stripe_test_mode": mode.value if mode in (StripeMode.SIMULATOR, StripeMode.TEST) else "",
    }

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from billing.webhooks import stripe_webhook
from config.health import healthz, readyz
from config.metrics import metrics_view
from dashboard.forms import EmailAuthenticationForm, InviteAwarePasswordResetForm
from dashboard.views import favicon
from workspaces.auth_views import ThrottledLoginView, ThrottledPasswordResetView

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),  # Prometheus: METRICS_TOKEN or METRICS_ALLOWED_IPS
    path("admin/", admin.site.urls),
    # Browsers ask for /favicon.ico on pages that name none (the admin, the API docs).
    path("favicon.ico", favicon),
    path("login/", ThrottledLoginView.as_view(authentication_form=EmailAuthenticationForm), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Password reset (and the invitation link sent to new members): Django's views, our templates,
    # mail through the configured EMAIL_BACKEND.
    path(
        "password-reset/",
        ThrottledPasswordResetView.as_view(form_class=InviteAwarePasswordResetForm),
        name="password_reset",
    ),
    path("password-reset/sent/", auth_views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path(
        "password-reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(post_reset_login=True),
        name="password_reset_confirm",
    ),
    path("password-reset/done/", auth_views.PasswordResetCompleteView.as_view(), name="password_reset_complete"),
    path("api/v1/", include("usage.urls")),
    path("api/v1/billing/", include("billing.payment_urls")),
    path("stripe/webhook/", stripe_webhook, name="stripe-webhook"),
    path("api/v1/", include("billing.urls")),
    path("api/v1/", include("budgets.urls")),
    path("api/v1/", include("notifications.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("", include("dashboard.urls")),
]

# JSON for /api/ paths (a database outage under /api/ answers 503 with Retry-After), the HTML
# templates for pages: config.errors.
handler404 = "config.errors.not_found"
handler500 = "config.errors.server_error"

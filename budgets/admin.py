from django.contrib import admin

from .models import Alert, AlertDelivery, Budget, DeliveryAttempt, WebhookEndpoint
from .services import budget_changed


class WebhookEndpointInline(admin.TabularInline):
    model = WebhookEndpoint
    extra = 0
    fields = ["url", "created_at"]
    readonly_fields = ["created_at"]  # the secret is never shown again, here neither


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    list_display = ["pk", "workspace", "api_key", "amount", "thresholds", "forecast_alerts", "hard_limit", "email"]
    list_filter = ["hard_limit", "forecast_alerts"]
    search_fields = ["workspace__slug", "api_key__name"]
    raw_id_fields = ["workspace", "api_key"]
    inlines = [WebhookEndpointInline]

    # Changes made here take effect as through the API: the allowance's cached hard limits are
    # dropped and the workspace is evaluated again.
    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        budget_changed(obj.workspace_id)

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        budget_changed(obj.workspace_id)

    def delete_queryset(self, request, queryset):
        workspaces = set(queryset.values_list("workspace_id", flat=True))
        super().delete_queryset(request, queryset)
        for workspace_id in workspaces:
            budget_changed(workspace_id)

    def save_formset(self, request, form, formset, change):
        # Endpoints added here get a secret, as through the API (shown to nobody: recreate the
        # endpoint through the API to get one to verify with).
        from .webhooks import secret_generate

        for endpoint in formset.save(commit=False):
            if not endpoint.secret:
                endpoint.secret = secret_generate()
            endpoint.save()
        for endpoint in formset.deleted_objects:
            endpoint.delete()


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = readonly_fields = ["number", "started_at", "outcome", "http_status", "duration_ms", "error"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class AlertDeliveryInline(admin.TabularInline):
    model = AlertDelivery
    extra = 0
    can_delete = False
    show_change_link = True
    fields = readonly_fields = ["channel", "target", "status", "attempts", "next_attempt_at", "delivered_at", "last_error"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    """History: read-only."""

    list_display = ["pk", "workspace", "kind", "threshold", "period", "spend", "budget_amount", "created_at"]
    list_filter = ["kind", "period"]
    search_fields = ["workspace__slug"]
    inlines = [AlertDeliveryInline]

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(admin.ModelAdmin):
    list_display = ["pk", "alert", "channel", "target", "status", "attempts", "next_attempt_at", "delivered_at"]
    list_filter = ["status", "channel"]
    search_fields = ["target"]
    inlines = [DeliveryAttemptInline]

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_add_permission(self, request) -> bool:
        return False

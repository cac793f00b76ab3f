from django.contrib import admin

from .models import ArchivedMonth, DailyRollup, UsageEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records the product writes itself (the usage ledger, billing's adjustments and close runs):
    staff inspect them, never edit them."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(UsageEvent)
class UsageEventAdmin(ReadOnlyAdmin):
    list_display = ["event_id", "workspace", "occurred_at", "feature", "model", "quantity", "unit_price", "amount"]
    list_filter = ["feature", "model", "spot"]
    search_fields = ["event_id", "workspace__slug"]
    date_hierarchy = "occurred_at"
    list_select_related = ["workspace"]
    show_full_result_count = False


@admin.register(DailyRollup)
class DailyRollupAdmin(ReadOnlyAdmin):
    list_display = ["day", "workspace", "feature", "model", "width", "height", "steps", "quantity", "amount_micros"]
    list_filter = ["feature", "model"]
    search_fields = ["workspace__slug"]
    date_hierarchy = "day"
    list_select_related = ["workspace"]


@admin.register(ArchivedMonth)
class ArchivedMonthAdmin(ReadOnlyAdmin):
    """The months `manage.py archive_usage` exported and removed: where the file is, its rows and
    its sha256 (`sha256sum` it before restoring)."""

    list_display = ["month", "rows", "path", "sha256", "archived_at"]
    date_hierarchy = "month"

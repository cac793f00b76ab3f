from django.contrib import admin

from .models import ApiKey, Membership, Workspace


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "timezone", "created_at"]
    search_fields = ["slug", "name"]
    inlines = [MembershipInline]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "display_prefix", "workspace", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "prefix", "workspace__slug"]
    # Keys are issued with create_api_key (the secret is shown once) and never edited here.
    readonly_fields = ["workspace", "name", "prefix", "secret_hash", "scopes", "created_at", "last_used_at"]

    def has_add_permission(self, request) -> bool:
        return False

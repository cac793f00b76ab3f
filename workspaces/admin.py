from django.contrib import admin
from django.db.models import Count
from django.urls import reverse
from django.utils.html import format_html

from .models import ApiKey, Membership, Workspace


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


class ApiKeyInline(admin.TabularInline):
    """Keys are issued on the dashboard or with create_api_key (the secret is shown once)."""

    model = ApiKey
    extra = 0
    fields = ["name", "display_prefix", "scopes", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "timezone", "members", "created_at", "dashboard"]
    list_filter = ["timezone", "created_at"]
    search_fields = ["slug", "name", "memberships__user__email"]
    date_hierarchy = "created_at"
    inlines = [MembershipInline, ApiKeyInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(member_count=Count("memberships", distinct=True))

    @admin.display(description="members", ordering="member_count")
    def members(self, workspace: Workspace) -> int:
        return workspace.member_count

    @admin.display(description="")
    def dashboard(self, workspace: Workspace) -> str:
        return format_html('<a href="{}?workspace={}">dashboard</a>', reverse("dashboard:overview"), workspace.slug)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "workspace", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["user__email", "user__username", "workspace__slug", "workspace__name"]
    list_select_related = ["user", "workspace"]
    autocomplete_fields = ["user", "workspace"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "display_prefix", "workspace", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at", "created_at"]
    search_fields = ["name", "prefix", "workspace__slug"]
    list_select_related = ["workspace"]
    # Keys are issued with create_api_key (the secret is shown once) and never edited here.
    readonly_fields = ["workspace", "name", "prefix", "secret_hash", "scopes", "created_at", "last_used_at"]

    def has_add_permission(self, request) -> bool:
        return False

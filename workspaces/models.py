"""Tenancy: workspaces, their members and their API keys."""

from __future__ import annotations

import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models


def validate_timezone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not an IANA time zone (e.g. 'Europe/Paris').")


class Workspace(models.Model):
    """The tenant. Every read and write is scoped to one."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    # Only for display: billing periods and rollup days are always UTC.
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        ADMIN = "admin", "Admin"
        VIEWER = "viewer", "Viewer"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "user"], name="membership_unique_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.workspace} ({self.role})"

    @property
    def can_manage(self) -> bool:
        return self.role in (self.Role.OWNER, self.Role.ADMIN)


class Scope(models.TextChoices):
    USAGE_WRITE = "usage:write", "Report usage"
    USAGE_READ = "usage:read", "Read usage and spend"
    BUDGETS_WRITE = "budgets:write", "Manage budgets"
    BILLING_WRITE = "billing:write", "Manage payment"


ALL_SCOPES: tuple[str, ...] = tuple(Scope.values)


class ApiKey(models.Model):
    """A machine credential. Only a SHA-256 of the secret is stored; the secret is shown once.

    The secret reads `mbk_<prefix>_<random>`: the prefix finds the row through a unique index,
    the hash check (constant time) proves the caller holds the rest. Secrets carry 256 random
    bits, so a fast hash is safe here, unlike for passwords.
    """

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["workspace", "created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.display_prefix})"

    @property
    def display_prefix(self) -> str:
        return f"mbk_{self.prefix}"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

"""The dashboard's own state: what a person chose on its pages and expects to find again."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class UserPreference(models.Model):
    """One person's choices on the dashboard, the same in every workspace and after every sign-in.
    A preference changes no workspace, so viewers and staff reading a workspace have theirs too."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="dashboard_preference")
    # The overview's period picker (dashboard.forms.PeriodForm's fields): a preset's key, whose days
    # follow today, or "custom" with its own days. Read back through the form, so a choice the form
    # no longer accepts is dropped for this month.
    overview_period = models.CharField(max_length=16, blank=True)
    overview_start = models.DateField(null=True, blank=True)
    overview_end = models.DateField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"preferences of {self.user}"

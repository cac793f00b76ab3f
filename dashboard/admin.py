"""The Django admin's frame for staff; each app registers its own models (billing/admin.py, …)."""

from django.contrib import admin

admin.site.site_header = "Meterboard staff"
admin.site.site_title = "Meterboard staff"
admin.site.index_title = "Workspaces, plans, discounts, price books and statements"
# "View site" in the admin goes to the staff overview (top spenders, failed payments, budgets).
admin.site.site_url = "/staff/"

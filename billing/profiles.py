"""A workspace's billing profile: who its invoices are addressed to and where they are sent.

One validation for the API (`PUT`/`PATCH /api/v1/billing/profile`) and the dashboard's form:
`billing_profile_update` raises a DRF ValidationError with an error list per field.
"""

from __future__ import annotations

import re

import pycountry
from django.core.validators import validate_email
from django.db import transaction
from rest_framework import serializers

from workspaces.models import Workspace

from .models import BillingProfile

MAX_EMAILS = 10
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_TAX_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9 .\-/]{1,62}[A-Za-z0-9]")
FIELDS = ("legal_name", "address_line1", "address_line2", "city", "postal_code", "region", "country", "tax_id", "billing_emails")


def country_code(value: str) -> str:
    """An ISO 3166-1 alpha-2 code, upper-cased; ValidationError otherwise."""
    code = value.strip().upper()
    if code and pycountry.countries.get(alpha_2=code) is None:
        raise serializers.ValidationError(f"{value!r} is not an ISO 3166-1 alpha-2 country code (e.g. 'DE', 'US').")
    return code


class _Line(serializers.CharField):
    """One line of text: trimmed, no control characters (they would break the PDF and the e-mails)."""

    def __init__(self, max_length: int, **kwargs):
        super().__init__(max_length=max_length, allow_blank=True, required=False, trim_whitespace=True, **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if _CONTROL.search(value):
            raise serializers.ValidationError("Must be one line of text, without control characters.")
        return value


class BillingProfileSerializer(serializers.Serializer):
    legal_name = _Line(200, help_text="The company or person invoiced (default: the workspace's name)")
    address_line1 = _Line(200)
    address_line2 = _Line(200)
    city = _Line(100)
    postal_code = _Line(32)
    region = _Line(100, help_text="State, province or county")
    country = _Line(2, help_text="ISO 3166-1 alpha-2, e.g. DE; with a tax rate set for it, its tax applies")
    tax_id = _Line(64, help_text="VAT or other tax id, printed on invoices, e.g. DE123456789")
    billing_emails = serializers.ListField(
        child=serializers.CharField(max_length=254), max_length=MAX_EMAILS, required=False,
        help_text=f"Where invoices and receipts go (at most {MAX_EMAILS}); empty: the owners and admins",
    )  # fmt: skip
    updated_at = serializers.DateTimeField(read_only=True, allow_null=True)

    def validate_country(self, value: str) -> str:
        return country_code(value)

    def validate_tax_id(self, value: str) -> str:
        if value and not _TAX_ID.fullmatch(value):
            raise serializers.ValidationError("A tax id is 3-64 letters and digits (spaces, dots, dashes and slashes between).")
        return value

    def validate_billing_emails(self, values: list[str]) -> list[str]:
        cleaned, errors = [], []
        for value in values:
            address = value.strip()
            try:
                validate_email(address)
            except Exception:
                errors.append(f"{value!r} is not an e-mail address.")
                continue
            local, _, domain = address.rpartition("@")
            cleaned.append(f"{local}@{domain.lower()}")
        if errors:
            raise serializers.ValidationError(errors)
        return list(dict.fromkeys(cleaned))


def billing_profile_of(workspace: Workspace) -> BillingProfile:
    """The workspace's profile, or an unsaved empty one."""
    return BillingProfile.objects.filter(workspace=workspace).first() or BillingProfile(workspace=workspace, updated_at=None)


def billing_profile_update(workspace: Workspace, data, *, partial: bool = False) -> BillingProfile:
    """Validate and store the fields given (all of them unless `partial`: missing ones are emptied).
    Raises serializers.ValidationError with per-field errors; nothing is stored then."""
    if not isinstance(data, dict):
        raise serializers.ValidationError({"non_field_errors": ["Send a JSON object of the profile's fields."]})
    unknown = sorted(set(data) - set(FIELDS) - {"updated_at"})
    if unknown:
        raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
    given = BillingProfileSerializer(data=data, partial=partial)
    given.is_valid(raise_exception=True)
    values = given.validated_data
    with transaction.atomic():
        profile, _ = BillingProfile.objects.select_for_update().get_or_create(workspace=workspace)
        for name in FIELDS:
            if name in values:
                setattr(profile, name, values[name])
            elif not partial:
                setattr(profile, name, [] if name == "billing_emails" else "")
        profile.save()
    return profile

"""Input of the dashboard's pages: the period picker, usage filters, keys, members, sign-in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from datetime import timezone as dt_timezone

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm, PasswordResetForm

from billing.statement import FEATURE_NAMES
from budgets import rules as budget_rules
from core.periods import add_months
from pricing.rules import FEATURES, MODELS
from usage.selectors import DAYS_BOUNDS_MESSAGE, EARLIEST_DAY, LATEST_DAY
from workspaces.models import ALL_SCOPES, ApiKey, Membership, Scope

MAX_PERIOD_MONTHS = 12

# Every day a page or an export is asked for lies in usage.selectors' bounds (EARLIEST_DAY,
# LATEST_DAY, as for the usage API): far from the ends of Python's calendar, where the day after,
# a year later or an offset of +14:00 no longer exists. A day outside is a form error, never a 500.


class DayField(forms.DateField):
    """A UTC day within [EARLIEST_DAY, LATEST_DAY]."""

    default_error_messages = {"invalid": "Enter a day as YYYY-MM-DD."}

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("widget", forms.DateInput(attrs={"type": "date"}))
        super().__init__(**kwargs)

    def to_python(self, value):
        if isinstance(value, str) and len(value) > 40:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        return super().to_python(value)

    def validate(self, value):
        super().validate(value)
        if value is not None and not EARLIEST_DAY <= value <= LATEST_DAY:
            raise forms.ValidationError(DAYS_BOUNDS_MESSAGE, code="out_of_bounds")


class ProblemsMixin:
    """Every error of a bound form as one list of sentences, field errors named by their label."""

    def problems(self) -> list[str]:
        found = []
        for name, errors in self.errors.items():
            label = self.fields[name].label if name in self.fields else None
            named = f"{label or name.replace('_', ' ').capitalize()}: " if name != "__all__" else ""
            found += [named + error for error in errors]
        return found


# --- The period picker -----------------------------------------------------------------------------

PRESETS = {
    "this_month": "This month",
    "last_month": "Last month",
    "last_3": "Last 3 months",
    "last_12": "Last 12 months",
    "custom": "Custom range",
}


@dataclass(frozen=True)
class Period:
    """UTC days [start, end], end inclusive (rollup days and billing months are UTC)."""

    key: str
    start: date
    end: date

    @property
    def label(self) -> str:
        if self.key == "custom":
            return f"{self.start:%b %-d, %Y} – {self.end:%b %-d, %Y}"
        return PRESETS[self.key]

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


def preset_period(key: str, today: date) -> Period:
    month = today.replace(day=1)
    if key == "last_month":
        start = add_months(month, -1)
        return Period(key, start, month - timedelta(days=1))
    if key == "last_3":
        return Period(key, add_months(month, -2), today)
    if key == "last_12":
        return Period(key, add_months(month, -11), today)
    return Period("this_month", month, today)


class PeriodForm(ProblemsMixin, forms.Form):
    period = forms.ChoiceField(choices=list(PRESETS.items()), required=False, label="Period")
    start = DayField(label="From (UTC day)")
    end = DayField(label="To (UTC day, included)")

    def __init__(self, data, *, today: date):
        super().__init__(data)
        self.today = today

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("period") != "custom" or "start" in self.errors or "end" in self.errors:
            return cleaned
        start, end = cleaned.get("start"), cleaned.get("end")
        if start is None or end is None:
            raise forms.ValidationError("A custom range needs both a first and a last day.")
        if end < start:
            raise forms.ValidationError("The last day comes before the first.")
        if end >= add_months(start, MAX_PERIOD_MONTHS):
            raise forms.ValidationError(f"A range covers at most {MAX_PERIOD_MONTHS} months.")
        return cleaned

    def resolved(self) -> Period:
        """The chosen period; this month when nothing (or something invalid) was asked for."""
        if not self.is_valid():
            return preset_period("this_month", self.today)
        data = self.cleaned_data
        if data.get("period") == "custom":
            return Period("custom", data["start"], data["end"])
        return preset_period(data.get("period") or "this_month", self.today)


# --- Usage filters ----------------------------------------------------------------------------------

FEATURE_CHOICES = [("", "All features")] + [(f, FEATURE_NAMES.get(f, f)) for f in FEATURES]
MODEL_CHOICES = [("", "All models")] + [(m, m.upper()) for m in MODELS]


MAX_ID = 2**63 - 1  # the largest primary key (bigint)


@dataclass(frozen=True)
class Cursor:
    """Where the next page of events starts: strictly older than (occurred_at, id)."""

    occurred_at: datetime  # UTC
    pk: int

    def __str__(self) -> str:
        return f"{self.occurred_at.isoformat()}~{self.pk}"


CURSOR_MESSAGE = "This page link is not valid; showing the newest events."


class CursorField(forms.CharField):
    """`?before=<occurred_at ISO 8601>~<event id>`, as the events page's "Older" link writes it."""

    default_error_messages = {"invalid": CURSOR_MESSAGE}

    def __init__(self, **kwargs):
        super().__init__(required=False, max_length=80, **kwargs)

    def to_python(self, value) -> Cursor | None:
        value = super().to_python(value)
        if not value:
            return None
        if len(value) > 80:
            raise forms.ValidationError(CURSOR_MESSAGE, code="invalid")
        instant, separator, pk = value.rpartition("~")
        try:
            if not separator or not pk.isascii() or not pk.isdigit():
                raise ValueError(pk)
            moment = datetime.fromisoformat(instant)
            moment = (moment if moment.tzinfo else moment.replace(tzinfo=dt_timezone.utc)).astimezone(dt_timezone.utc)
            number = int(pk)
        except (ValueError, OverflowError):
            raise forms.ValidationError(CURSOR_MESSAGE, code="invalid") from None
        earliest = datetime.combine(EARLIEST_DAY, time.min, tzinfo=dt_timezone.utc)
        latest = datetime.combine(LATEST_DAY, time.min, tzinfo=dt_timezone.utc) + timedelta(days=1)
        if not earliest <= moment <= latest or not 1 <= number <= MAX_ID:
            raise forms.ValidationError(CURSOR_MESSAGE, code="invalid")
        return Cursor(moment, number)

    def validate(self, value):
        pass  # to_python has checked everything; `value` is a Cursor or None

    def run_validators(self, value):
        pass


FILTER_FIELDS = ("start", "end", "feature", "model", "api_key", "__all__")
EXPORT_KINDS = [("events", "Events"), ("rollups", "Daily rollups")]
MAX_PAGE = 1_000_000


class UsageFilterForm(ProblemsMixin, forms.Form):
    """The usage pages' and the CSV export's parameters: filters (start, end, feature, model,
    api_key), and the events page's cursor (`before`), the rollups page's `page`, the export's
    `kind`. An invalid filter shows this month; an invalid cursor or page, the first page."""

    start = DayField(label="From (UTC day)")
    end = DayField(label="To (UTC day, included)")
    feature = forms.ChoiceField(choices=FEATURE_CHOICES, required=False)
    model = forms.ChoiceField(choices=MODEL_CHOICES, required=False)
    api_key = forms.TypedChoiceField(coerce=int, required=False, empty_value=None, label="API key")
    before = CursorField(label="Page link")
    page = forms.IntegerField(required=False, min_value=1, max_value=MAX_PAGE, label="Page")
    kind = forms.ChoiceField(choices=EXPORT_KINDS, required=False, label="Export kind")

    def __init__(self, data, *, workspace, today: date):
        super().__init__(data)
        self.today = today
        keys = ApiKey.objects.filter(workspace=workspace).order_by("name", "pk")
        self.fields["api_key"].choices = [("", "All API keys")] + [
            (key.pk, f"{key.name} ({key.display_prefix}){' · revoked' if key.revoked_at else ''}") for key in keys
        ]

    def clean(self):
        cleaned = super().clean()
        if "start" in self.errors or "end" in self.errors:
            return cleaned
        start = cleaned.get("start") or self.today.replace(day=1)
        end = cleaned.get("end") or self.today
        if end < start:
            raise forms.ValidationError("The last day comes before the first.")
        cleaned["start"], cleaned["end"] = start, end
        return cleaned

    @property
    def filters_invalid(self) -> bool:
        return not self.is_valid() and any(name in self.errors for name in FILTER_FIELDS)

    def cursor(self) -> Cursor | None:
        return None if not self.is_valid() and "before" in self.errors else self.cleaned_data.get("before")

    def page_number(self) -> int:
        return 1 if not self.is_valid() and "page" in self.errors else self.cleaned_data.get("page") or 1

    def export_kind(self) -> str:
        return (self.cleaned_data.get("kind") if self.is_valid() else "") or "events"

    def unfiltered(self) -> dict:
        """The filters of a page opened without any: this month, every feature, model and key."""
        return {"start": self.today.replace(day=1), "end": self.today, "feature": "", "model": "", "api_key_id": None}

    def filters(self) -> dict:
        """start, end, feature, model, api_key_id; the current month when a filter is invalid."""
        if self.filters_invalid:
            return self.unfiltered()
        data = self.cleaned_data
        return {
            "start": data["start"],
            "end": data["end"],
            "feature": data.get("feature") or "",
            "model": data.get("model") or "",
            "api_key_id": data.get("api_key"),
        }


# --- API keys and members ----------------------------------------------------------------------------


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=100, label="Name", help_text="Where it is used, e.g. “Production generators”.")
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices,
        initial=list(ALL_SCOPES),
        widget=forms.CheckboxSelectMultiple,
        label="Scopes",
    )


ROLE_CHOICES = Membership.Role.choices


class MemberAddForm(forms.Form):
    email = forms.EmailField(label="E-mail", max_length=150)
    role = forms.ChoiceField(choices=ROLE_CHOICES, initial=Membership.Role.VIEWER, label="Role")

    def clean_email(self) -> str:
        return self.cleaned_data["email"].strip().lower()


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=ROLE_CHOICES, label="Role")


# --- Sign-in and password reset --------------------------------------------------------------------


class EmailAuthenticationForm(AuthenticationForm):
    """Sign-in by e-mail: accounts are named by their lowercased address."""

    def clean_username(self) -> str:
        return (self.cleaned_data.get("username") or "").strip().lower()


class InviteAwarePasswordResetForm(PasswordResetForm):
    """Django's reset form skips accounts without a usable password; an invited member has none
    until they follow their invitation, and may ask for a new link here."""

    def get_users(self, email: str):
        User = get_user_model()
        return (
            user
            for user in User._default_manager.filter(email__iexact=email, is_active=True)
            if user.email.lower() == email.lower()
        )


# --- Budgets ---------------------------------------------------------------------------------------


class BudgetForm(forms.Form):
    """A monthly budget: the rules (and their messages) are budgets.rules', as for the budgets API;
    this form reads them from text boxes (thresholds comma-separated, one webhook URL a line)."""

    amount = forms.DecimalField(label="Monthly amount (USD)", min_value=budget_rules.AMOUNT_MIN, max_value=budget_rules.AMOUNT_MAX,
                                max_digits=budget_rules.AMOUNT_DIGITS, decimal_places=budget_rules.AMOUNT_PLACES)  # fmt: skip
    api_key = forms.ModelChoiceField(queryset=ApiKey.objects.none(), required=False, empty_label="The whole workspace",
                                     label="Applies to")  # fmt: skip
    thresholds = forms.CharField(label="Alert at (percent of the amount)", initial="50, 80, 100", max_length=200,
                                 help_text="Comma-separated, each alerted once a month.")  # fmt: skip
    forecast_alerts = forms.BooleanField(required=False, initial=True, label="Also alert when the month-end forecast reaches a threshold")
    hard_limit = forms.BooleanField(required=False, label="Hard limit: the allowance endpoint answers “blocked” once spend reaches the amount")
    email = forms.BooleanField(required=False, initial=True, label="E-mail the workspace's owners and admins")
    anomaly_threshold = forms.DecimalField(
        label="Unusual-spend alert at (score)", required=False, initial=4, min_value=budget_rules.ANOMALY_THRESHOLD_MIN,
        max_value=budget_rules.ANOMALY_THRESHOLD_MAX, max_digits=4, decimal_places=1,
        help_text="How far above its usual a day's spend must be (spreads above the median of recent days) to alert; "
                  "4 by default, empty for no unusual-spend alerts.",
    )  # fmt: skip
    webhooks = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}), label="Webhook URLs",
                               help_text="One per line. Each gets a signing secret, shown once.")  # fmt: skip

    def __init__(self, *args, workspace, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["api_key"].queryset = budget_rules.budget_api_keys(workspace).order_by("name")

    def clean_thresholds(self) -> list[int]:
        parts = [part.strip().rstrip("%").strip() for part in self.cleaned_data["thresholds"].replace(";", ",").split(",")]
        parts = [part for part in parts if part]
        if not parts:
            raise forms.ValidationError("Give at least one threshold, e.g. 50, 80, 100.")
        try:
            values = [int(part) for part in parts]
        except ValueError:
            raise forms.ValidationError("Thresholds are whole percents, e.g. 50, 80, 100.") from None
        try:
            return budget_rules.thresholds_check(values)
        except budget_rules.BudgetInvalid as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_webhooks(self) -> list[str]:
        urls = list(dict.fromkeys(line.strip() for line in self.cleaned_data["webhooks"].splitlines() if line.strip()))
        try:
            budget_rules.webhooks_count_check(urls)
        except budget_rules.BudgetInvalid as exc:
            raise forms.ValidationError(str(exc)) from None
        errors = []
        for url in urls:
            try:
                budget_rules.webhook_url_check(url)
            except budget_rules.BudgetInvalid as exc:
                errors.append(f"{url}: {exc}")
        if errors:
            raise forms.ValidationError(errors)
        return urls

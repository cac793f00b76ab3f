from django import forms
from django.contrib import admin, messages
from django.db.models import Exists, OuterRef

from pricing.models import PriceBook, PriceBookRate
from usage.admin import ReadOnlyAdmin
from usage.models import UsageEvent

from .models import (
    AutoRecharge,
    BalanceAdjustment,
    BillingProfile,
    CloseRun,
    CreditEntry,
    CreditLot,
    CreditPurchase,
    Discount,
    Invoice,
    Plan,
    PlanAssignment,
    PlanRate,
    Statement,
    StatementAudit,
    StatementLine,
    TaxRate,
    VolumeTier,
)


class PriceBookRateInline(admin.TabularInline):
    model = PriceBookRate
    extra = 0

    def has_change_permission(self, request, obj=None) -> bool:
        return PriceBookAdmin.is_editable(obj) and super().has_change_permission(request, obj)

    has_add_permission = lambda self, request, obj=None: PriceBookAdmin.is_editable(obj)  # noqa: E731
    has_delete_permission = has_change_permission


@admin.register(PriceBook)
class PriceBookAdmin(admin.ModelAdmin):
    list_display = ["version", "effective_from", "composition_multiplier", "unit_rounding", "in_use"]
    inlines = [PriceBookRateInline]
    search_fields = ["notes"]

    @staticmethod
    def is_editable(book: PriceBook | None) -> bool:
        """A version that has priced events is history: publish a new version instead."""
        return book is None or not UsageEvent.objects.filter(price_book=book).exists()

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            used=Exists(UsageEvent.objects.filter(price_book=OuterRef("pk")))
        )

    @admin.display(boolean=True, description="has priced events")
    def in_use(self, book: PriceBook) -> bool:
        return book.used

    def has_change_permission(self, request, obj=None) -> bool:
        return self.is_editable(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return self.is_editable(obj) and super().has_delete_permission(request, obj)


class PlanRateInline(admin.TabularInline):
    model = PlanRate
    extra = 0


class VolumeTierInline(admin.TabularInline):
    model = VolumeTier
    extra = 0


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ["name", "is_default", "prepaid_only", "free_tier_credit", "volume_mode", "savings_commitment", "reserved_fee"]
    list_filter = ["is_default", "prepaid_only", "volume_mode"]
    search_fields = ["name"]
    inlines = [PlanRateInline, VolumeTierInline]


@admin.register(PlanAssignment)
class PlanAssignmentAdmin(admin.ModelAdmin):
    list_display = ["workspace", "plan", "effective_from"]
    list_filter = ["plan"]
    search_fields = ["workspace__slug"]
    autocomplete_fields = ["workspace"]


@admin.register(Discount)
class DiscountAdmin(admin.ModelAdmin):
    list_display = ["name", "workspace", "kind", "value", "duration", "duration_months", "starts_on", "ends_on"]
    list_filter = ["kind", "duration"]
    search_fields = ["name", "workspace__slug"]
    autocomplete_fields = ["workspace"]


class StatementLineInline(admin.TabularInline):
    model = StatementLine
    extra = 0
    fields = ["position", "kind", "description", "quantity", "unit_price", "amount"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class StatementAuditInline(admin.TabularInline):
    model = StatementAudit
    extra = 0
    fields = ["at", "actor", "action", "note"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Statement)
class StatementAdmin(admin.ModelAdmin):
    """Finalized statements never change here: corrections are void and reissue."""

    list_display = ["workspace", "period", "status", "total", "amount_due_cents", "carried_forward", "finalized_at"]
    list_filter = ["status", "period"]
    search_fields = ["workspace__slug"]
    list_select_related = ["workspace"]
    inlines = [StatementLineInline, StatementAuditInline]
    actions = ["void_and_reissue", "rerun_close"]
    readonly_fields = [f.name for f in Statement._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Void and reissue from the ledger (keeps both, audited)")
    def void_and_reissue(self, request, queryset):
        from .errors import CloseRefused
        from .reissue import statement_void_and_reissue

        for statement in queryset:
            try:
                new = statement_void_and_reissue(statement, actor=request.user.get_username(), reason="staff: void and reissue")
                self.message_user(request, f"{statement}: voided; reissued as #{new.pk} (total {new.total}).")
            except CloseRefused as exc:
                self.message_user(request, f"{statement}: {exc}", level=messages.WARNING)

    @admin.action(description="Re-run the close for these statements' months (finishes what is missing)")
    def rerun_close(self, request, queryset):
        from .close import period_close
        from .errors import CloseRefused

        for period in sorted({s.period for s in queryset}):
            try:
                report = period_close(period)
                self.message_user(request, f"{period:%Y-%m}: {report.created} created, {report.already_closed} already closed.")
            except CloseRefused as exc:
                self.message_user(request, f"{period:%Y-%m}: {exc}", level=messages.WARNING)


@admin.register(BalanceAdjustment)
class BalanceAdjustmentAdmin(ReadOnlyAdmin):
    list_display = ["workspace", "kind", "amount", "description", "source", "applied_to", "created_at"]
    list_filter = ["kind", ("applied_to", admin.EmptyFieldListFilter)]
    search_fields = ["workspace__slug", "description"]


@admin.register(CloseRun)
class CloseRunAdmin(ReadOnlyAdmin):
    list_display = ["period", "status", "attempts", "started_at", "finished_at", "statements_created", "months_closed"]
    list_filter = ["status"]


class TaxRateForm(forms.ModelForm):
    class Meta:
        model = TaxRate
        fields = ["workspace", "country", "name", "percent"]

    def clean_country(self):
        from .profiles import country_code

        try:
            return country_code(self.cleaned_data.get("country", ""))
        except Exception as exc:  # a DRF ValidationError: its message
            raise forms.ValidationError(str(getattr(exc, "detail", [exc])[0])) from None

    def clean(self):
        data = super().clean()
        if bool(data.get("workspace")) == bool(data.get("country")):
            raise forms.ValidationError("Set either a workspace or a country, not both.")
        return data


@admin.register(TaxRate)
class TaxRateAdmin(admin.ModelAdmin):
    """Tax on statements closed from now on (a workspace's own rate wins over its country's)."""

    form = TaxRateForm
    list_display = ["__str__", "workspace", "country", "name", "percent", "updated_at"]
    search_fields = ["workspace__slug", "country", "name"]
    autocomplete_fields = ["workspace"]


@admin.register(BillingProfile)
class BillingProfileAdmin(admin.ModelAdmin):
    list_display = ["workspace", "legal_name", "country", "tax_id", "updated_at"]
    search_fields = ["workspace__slug", "legal_name", "tax_id"]
    readonly_fields = ["updated_at"]


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyAdmin):
    """Issued invoices and credit notes never change: a correction is a void and reissue."""

    list_display = ["number", "kind", "statement", "issued_at", "emails_enqueued_at"]
    list_filter = ["kind", "year"]
    search_fields = ["number", "statement__workspace__slug"]


# --- Prepaid credits: staff grant a lot here (billing.credits.credits_grant); the ledger is read-only.


class CreditGrantForm(forms.ModelForm):
    class Meta:
        model = CreditLot
        fields = ["workspace", "amount", "expires_at", "note"]

    def clean(self):
        from django.utils import timezone

        from .credits import grant_errors

        data = super().clean()
        for field, problems in grant_errors(data.get("amount"), data.get("expires_at"), now=timezone.now()).items():
            if field not in self.errors:
                self.add_error(field, problems)
        return data


class CreditEntryInline(admin.TabularInline):
    model = CreditEntry
    extra = 0
    fields = ["created_at", "kind", "amount", "statement", "note"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(CreditLot)
class CreditLotAdmin(admin.ModelAdmin):
    """Add: a promotional grant to a workspace (its own lot, optional expiry and note). A lot is
    never edited or deleted: the ledger is append-only."""

    form = CreditGrantForm
    list_display = ["workspace", "source", "amount", "remaining", "expires_at", "note", "created_by", "created_at"]
    list_filter = ["source"]
    search_fields = ["workspace__slug", "note"]
    inlines = [CreditEntryInline]
    actions = ["refund_to_card"]

    @admin.action(description="Refund what is left of the selected purchased lots to the card")
    def refund_to_card(self, request, queryset):
        from core.errors import ServiceError

        from .credit_refunds import credit_lot_refund

        for lot in queryset:
            try:
                refund = credit_lot_refund(lot, actor=f"staff:{request.user}")
            except ServiceError as exc:
                self.message_user(request, f"Lot {lot.pk}: {exc}", level=messages.WARNING)
                continue
            level = messages.SUCCESS if refund.status == "succeeded" else messages.WARNING
            self.message_user(request, f"Lot {lot.pk}: {refund.amount_cents / 100:.2f} USD refund {refund.status} {refund.error}", level=level)

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change):
        from .credits import credits_grant

        data = form.cleaned_data  # validated by the form with the service's rule (grant_errors)
        lot = credits_grant(data["workspace"], data["amount"], actor=f"staff:{request.user}",
                            expires_at=data.get("expires_at"), note=data.get("note", ""))
        obj.pk, obj.remaining, obj.created_by = lot.pk, lot.remaining, lot.created_by
        obj.created_at = lot.created_at


@admin.register(CreditEntry)
class CreditEntryAdmin(ReadOnlyAdmin):
    list_display = ["workspace", "created_at", "kind", "amount", "lot", "statement", "note"]
    list_filter = ["kind"]
    search_fields = ["workspace__slug", "note"]


@admin.register(CreditPurchase)
class CreditPurchaseAdmin(ReadOnlyAdmin):
    list_display = ["workspace", "amount_cents", "status", "delivery", "failure_code", "payment_intent_id", "crossing", "created_by", "created_at"]
    list_filter = ["status", "failure_code"]
    search_fields = ["workspace__slug", "payment_intent_id"]


@admin.register(AutoRecharge)
class AutoRechargeAdmin(admin.ModelAdmin):
    list_display = ["workspace", "enabled", "threshold", "amount", "max_per_day", "armed", "crossings", "disabled_reason"]
    list_filter = ["enabled"]
    readonly_fields = ["armed", "crossings"]

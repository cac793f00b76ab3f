"""Plans, discounts, statements and their lines, payments and the records of each close."""

from __future__ import annotations

from decimal import Decimal

from django.db import models

from pricing.models import PriceBookRate

# --- Plans ------------------------------------------------------------------------------------


class Plan(models.Model):
    """Commercial terms. The default plan is pay-as-you-go with the free tier; custom plans add
    any of custom rates, a spot discount, volume tiers, a savings plan and reserved capacity."""

    class VolumeMode(models.TextChoices):
        GRADUATED = "graduated", "Graduated (each slice at its tier's rate)"
        ALL_UNITS = "all_units", "All units (the whole amount at the tier reached)"

    name = models.CharField(max_length=100, unique=True)
    is_default = models.BooleanField(default=False, help_text="Prices workspaces with no assignment")
    free_tier_credit = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0.50"))
    spot_discount_percent = models.DecimalField(max_digits=5, decimal_places=2, default=Decimal(0))
    volume_mode = models.CharField(max_length=16, choices=VolumeMode.choices, default=VolumeMode.GRADUATED)
    savings_commitment = models.DecimalField(
        max_digits=14, decimal_places=6, null=True, blank=True, help_text="USD a month"
    )
    savings_discount_percent = models.DecimalField(max_digits=5, decimal_places=2, default=Decimal(0))
    reserved_fee = models.DecimalField(
        max_digits=14, decimal_places=6, null=True, blank=True, help_text="USD a month"
    )
    prepaid_only = models.BooleanField(
        default=False, help_text="Usage stops (allowance: credits_exhausted) once month-to-date spend reaches the credit balance"
    )
    reserved_included_usage = models.DecimalField(
        max_digits=14, decimal_places=6, null=True, blank=True, help_text="USD of usage the fee includes"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=models.Q(is_default=True), name="plan_one_default"
            )
        ]

    def __str__(self) -> str:
        return self.name


class PlanRate(models.Model):
    """A custom rate: a percentage of list price, or an absolute unit price."""

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="rates")
    feature = models.CharField(max_length=32, choices=PriceBookRate.FEATURE_CHOICES)
    model = models.CharField(max_length=16, choices=PriceBookRate.MODEL_CHOICES, blank=True, default="")
    percent_of_list = models.DecimalField(max_digits=7, decimal_places=3, null=True, blank=True)
    unit_price = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["plan", "feature", "model"], name="planrate_unique"),
            models.CheckConstraint(
                condition=models.Q(percent_of_list__isnull=True) ^ models.Q(unit_price__isnull=True),
                name="planrate_percent_xor_price",
            ),
        ]

    def __str__(self) -> str:
        price = f"{self.percent_of_list}% of list" if self.percent_of_list is not None else f"${self.unit_price}"
        return f"{self.feature}{'/' + self.model if self.model else ''}: {price}"



class VolumeTier(models.Model):
    """Discount percent for the month's usage amount up to `up_to` USD (null: no upper bound)."""

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="volume_tiers")
    up_to = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    discount_percent = models.DecimalField(max_digits=5, decimal_places=2)

    class Meta:
        ordering = [models.F("up_to").asc(nulls_last=True)]

    def __str__(self) -> str:
        return f"up to {self.up_to if self.up_to is not None else '∞'}: {self.discount_percent}% off"



class PlanAssignment(models.Model):
    """A workspace's plan from `effective_from` (UTC) until its next assignment."""

    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="plan_assignments")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="assignments")
    effective_from = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["workspace", "-effective_from"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "effective_from"], name="planassignment_unique_start")
        ]

    def __str__(self) -> str:
        return f"{self.workspace} on {self.plan} from {self.effective_from:%Y-%m-%d}"



class Discount(models.Model):
    """A coupon granted to a workspace: percent or fixed; once, N months, or forever."""

    class Kind(models.TextChoices):
        PERCENT = "percent", "Percent off"
        FIXED = "fixed", "Fixed amount off (USD)"

    class Duration(models.TextChoices):
        ONCE = "once", "Once"
        REPEATING = "repeating", "N months"
        FOREVER = "forever", "Forever"

    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.CASCADE, related_name="discounts")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    value = models.DecimalField(max_digits=14, decimal_places=6, help_text="percent, or USD")
    duration = models.CharField(max_length=16, choices=Duration.choices, default=Duration.ONCE)
    duration_months = models.PositiveIntegerField(null=True, blank=True)
    features = models.JSONField(default=list, blank=True, help_text="Empty: every feature")
    starts_on = models.DateField(help_text="First billing month it may apply to (its 1st)")
    ends_on = models.DateField(null=True, blank=True, help_text="No month starting after this")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


# --- Statements ------------------------------------------------------------------------------


class Statement(models.Model):
    """One workspace's bill for one UTC calendar month. Finalized statements never change."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        FINALIZED = "finalized", "Finalized"
        PAID = "paid", "Paid"
        PAYMENT_FAILED = "payment_failed", "Payment failed"
        VOID = "void", "Void"

    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.PROTECT, related_name="statements")
    period = models.DateField(help_text="The 1st of the month (UTC)")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="+", null=True)
    total = models.DecimalField(max_digits=18, decimal_places=6, default=Decimal(0))  # USD
    amount_due_cents = models.BigIntegerField(default=0)
    carried_forward = models.DecimalField(max_digits=18, decimal_places=6, default=Decimal(0))
    # What this statement bills (billing.drafts, "Which events a statement bills"): the events
    # that occurred before the period's end and were received by `usage_cutoff`, less those the
    # previous live statement billed, i.e. those that occurred before `prior_period`'s end and were
    # received by `prior_cutoff`. A reissue keeps all three, so it bills the very same events.
    usage_cutoff = models.DateTimeField(null=True)
    prior_period = models.DateField(null=True, blank=True)
    prior_cutoff = models.DateTimeField(null=True, blank=True)
    # The balance this statement took over from the previous one (kept by a reissue).
    carried_in = models.DecimalField(max_digits=18, decimal_places=6, default=Decimal(0))
    # The tax applied (billing.statement step 9): its name and rate, and the amount (also a line).
    tax_name = models.CharField(max_length=40, blank=True)
    tax_percent = models.DecimalField(max_digits=6, decimal_places=3, default=Decimal(0))
    tax = models.DecimalField(max_digits=18, decimal_places=6, default=Decimal(0))
    credits_applied = models.DecimalField(max_digits=18, decimal_places=6, default=Decimal(0))  # USD, the credits line
    created_at = models.DateTimeField(auto_now_add=True)
    finalized_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    reissue_of = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="reissues")
    next_retry_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-period", "workspace"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "period"],
                condition=~models.Q(status="void"),
                name="statement_one_live_per_month",
            )
        ]

    def __str__(self) -> str:
        return f"{self.workspace} {self.period:%Y-%m} ({self.status})"


class StatementLine(models.Model):
    class Kind(models.TextChoices):
        USAGE = "usage", "Usage"
        LATE_USAGE = "late_usage", "Late usage"
        VOLUME_DISCOUNT = "volume_discount", "Volume discount"
        SAVINGS_DISCOUNT = "savings_discount", "Savings-plan discount"
        COUPON = "coupon", "Coupon"
        FREE_TIER = "free_tier", "Free tier"
        COMMITMENT_SHORTFALL = "commitment_shortfall", "Commitment shortfall"
        FIXED_FEE = "fixed_fee", "Fixed fee"
        CREDITS = "credits", "Prepaid credits"
        TAX = "tax", "Tax"
        CARRIED_BALANCE = "carried_balance", "Carried balance"
        ADJUSTMENT = "adjustment", "Adjustment"

    statement = models.ForeignKey(Statement, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveIntegerField()
    kind = models.CharField(max_length=32, choices=Kind.choices)
    description = models.CharField(max_length=300)
    quantity = models.BigIntegerField(default=1)
    unit_price = models.DecimalField(max_digits=18, decimal_places=6)
    amount = models.DecimalField(max_digits=18, decimal_places=6)

    class Meta:
        ordering = ["statement", "position"]
        constraints = [
            models.UniqueConstraint(fields=["statement", "position"], name="statementline_unique_position")
        ]

    def __str__(self) -> str:
        return f"{self.description}: {self.amount}"



class BalanceAdjustment(models.Model):
    """Money owed (positive) or credited (negative) on the workspace's next statement.

    Made when staff reissue a statement whose carried balance a later statement had already
    billed: the later statement is final, so the difference is settled on the next one, as its
    own line, once. `applied_to` is the statement that bills it (a reissue of that statement takes
    it over); a credit larger than that statement's total leaves a new adjustment for the rest.
    """

    class Kind(models.TextChoices):
        CORRECTION = "correction", "Correction of a reissued statement"
        REMAINDER = "remainder", "Credit a statement could not take"

    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.PROTECT, related_name="balance_adjustments")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = models.DecimalField(max_digits=18, decimal_places=6)
    description = models.CharField(max_length=300)
    source = models.ForeignKey(Statement, on_delete=models.PROTECT, related_name="adjustments_made")
    applied_to = models.ForeignKey(
        Statement, on_delete=models.PROTECT, null=True, blank=True, related_name="adjustments_applied"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["workspace", "created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.workspace} {self.amount:+} ({self.description})"


class CloseRun(models.Model):
    """One scheduled (or staff-started) close of a month: shown on the staff page, and staff are
    e-mailed when one fails for good, so a month never stays open unnoticed."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        RETRYING = "retrying", "Failed, will retry"
        FAILED = "failed", "Failed"

    period = models.DateField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    attempts = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    months_closed = models.JSONField(default=list, blank=True)
    statements_created = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-pk"]

    def __str__(self) -> str:
        return f"close {self.period:%Y-%m}: {self.status}"


class StatementAudit(models.Model):
    """Who did what to a statement, and why (void and reissue, re-runs, payment outcomes)."""

    statement = models.ForeignKey(Statement, on_delete=models.CASCADE, related_name="audit")
    at = models.DateTimeField(auto_now_add=True)
    actor = models.CharField(max_length=200)
    action = models.CharField(max_length=64)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["statement", "at"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor}: {self.action}"



# --- Stripe -----------------------------------------------------------------------------------


class StripeCustomer(models.Model):
    workspace = models.OneToOneField("workspaces.Workspace", on_delete=models.PROTECT, related_name="stripe_customer")
    customer_id = models.CharField(max_length=255, unique=True)
    default_payment_method = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.customer_id



class PaymentAttempt(models.Model):
    """One charge of a statement. Saved STARTED before Stripe is called, then its outcome, so a
    crash between the two is reconciled on re-run (by the PaymentIntent's metadata), never
    charged twice."""

    class Status(models.TextChoices):
        STARTED = "started", "Started"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    class FailureCode(models.TextChoices):
        """Why a FAILED attempt failed, for code to act on (its `error` is for people)."""

        NO_CARD = "no_card", "No card on file"
        DECLINED = "declined", "Declined"  # by the bank, or the payment failed at Stripe
        AUTHENTICATION = "authentication_required", "The bank asked for authentication"
        REFUSED = "refused", "Stripe refused the request"  # a detached card, a deleted customer

    class Delivery(models.TextChoices):
        """Where a STARTED attempt's request is (billing.payments decides what to do next)."""

        SENDING = "sending", "Being sent"  # a process is calling Stripe, until `sending_until`
        NOT_SENT = "not_sent", "Never reached Stripe"  # provably: sent again at once, same key
        UNKNOWN = "unknown", "Sent; the answer was lost"  # reconciled with Stripe before anything else
        ANSWERED = "answered", "Stripe answered"

    statement = models.ForeignKey(Statement, on_delete=models.PROTECT, related_name="payment_attempts")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.STARTED)
    delivery = models.CharField(max_length=16, choices=Delivery.choices, default=Delivery.SENDING)
    # While SENDING: the process calling Stripe holds the attempt until then (longer than a call
    # can last); past it, that process died and the attempt is reconciled.
    sending_until = models.DateTimeField(null=True, blank=True)
    amount_cents = models.BigIntegerField()
    idempotency_key = models.CharField(max_length=100, unique=True)
    payment_intent_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    error = models.TextField(blank=True)  # why it failed; for a STARTED attempt, why it is not settled yet
    failure_code = models.CharField(max_length=32, choices=FailureCode.choices, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["statement", "number"]
        constraints = [
            models.UniqueConstraint(fields=["statement", "number"], name="paymentattempt_unique_number")
        ]
        # The every-minute job looks for unsettled attempts: few, among many settled ones.
        indexes = [models.Index(fields=["created_at"], condition=models.Q(status="started"), name="paymentattempt_open")]

    def __str__(self) -> str:
        return f"attempt {self.number} of statement {self.statement_id}: {self.status}"



class StripeWebhookEvent(models.Model):
    """Each Stripe event, stored once by its id before it is handled."""

    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        PROCESSED = "processed", "Processed"
        IGNORED = "ignored", "Ignored"
        FAILED = "failed", "Failed"

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED)
    error = models.TextField(blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.event_id} ({self.type})"



# --- Invoices ---------------------------------------------------------------------------------


class BillingProfile(models.Model):
    """Who a workspace's invoices are addressed to, and where they are sent. Edited by owners and
    admins (dashboard, `PUT /api/v1/billing/profile`); each invoice keeps a copy as it was when
    issued, so editing it later never changes an invoice already issued."""

    workspace = models.OneToOneField("workspaces.Workspace", on_delete=models.CASCADE, related_name="billing_profile")
    legal_name = models.CharField(max_length=200, blank=True)
    address_line1 = models.CharField(max_length=200, blank=True)
    address_line2 = models.CharField(max_length=200, blank=True)
    city = models.CharField(max_length=100, blank=True)
    postal_code = models.CharField(max_length=32, blank=True)
    region = models.CharField(max_length=100, blank=True, help_text="State, province or county")
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166-1 alpha-2, e.g. DE")
    tax_id = models.CharField(max_length=64, blank=True, help_text="VAT or other tax id, e.g. DE123456789")
    billing_emails = models.JSONField(default=list, blank=True, help_text="Where invoices and receipts go")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.legal_name or self.workspace} ({self.country or 'no country'})"


class TaxRate(models.Model):
    """A tax rate staff set for one workspace, or for every workspace whose billing profile is in a
    country. A workspace's own rate wins over its country's; with neither, no tax (0)."""

    workspace = models.OneToOneField(
        "workspaces.Workspace", on_delete=models.CASCADE, null=True, blank=True, related_name="tax_rate"
    )
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166-1 alpha-2, e.g. DE")
    name = models.CharField(max_length=40, default="Tax", help_text="As on the invoice, e.g. VAT")
    percent = models.DecimalField(max_digits=6, decimal_places=3)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["country", "workspace"]
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(workspace__isnull=True) & ~models.Q(country=""))
                | (models.Q(workspace__isnull=False) & models.Q(country="")),
                name="taxrate_workspace_xor_country",
            ),
            models.UniqueConstraint(fields=["country"], condition=~models.Q(country=""), name="taxrate_one_per_country"),
            models.CheckConstraint(
                condition=models.Q(percent__gte=0) & models.Q(percent__lte=100), name="taxrate_percent_0_100"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.percent.normalize():f}% ({self.workspace or self.country})"


class InvoiceSequence(models.Model):
    """The last number issued in a series (invoices, credit notes) and year. Taken with one
    `INSERT … ON CONFLICT DO UPDATE … RETURNING` in the transaction that finalizes the statements,
    so a number exists only if its invoice does: no gaps, no duplicates (billing.invoices)."""

    series = models.CharField(max_length=16)
    year = models.PositiveIntegerField()
    last = models.PositiveIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["series", "year"], name="invoicesequence_unique")]

    def __str__(self) -> str:
        return f"{self.series} {self.year}: {self.last}"


class Invoice(models.Model):
    """The invoice of a finalized statement, or the credit note that cancels it when the statement
    is voided. Numbered gap-free per year; the seller and buyer are copied in when it is issued.
    The PDF is rendered from this, the statement's lines and its payment status (billing.invoice_pdf)."""

    class Kind(models.TextChoices):
        INVOICE = "invoice", "Invoice"
        CREDIT_NOTE = "credit_note", "Credit note"

    statement = models.ForeignKey(Statement, on_delete=models.PROTECT, related_name="invoices")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.INVOICE)
    number = models.CharField(max_length=32, unique=True)
    year = models.PositiveIntegerField()
    sequence = models.PositiveIntegerField()
    issued_at = models.DateTimeField()
    seller = models.JSONField(default=dict)
    buyer = models.JSONField(default=dict)
    cancels = models.OneToOneField(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="credit_note"
    )
    # Set once its e-mails are enqueued; the hourly sweep enqueues those of any invoice left
    # without (the broker was down at the commit), so none is lost.
    emails_enqueued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-issued_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["statement", "kind"], name="invoice_one_per_statement_and_kind"),
            models.UniqueConstraint(fields=["kind", "year", "sequence"], name="invoice_unique_sequence"),
        ]

    def __str__(self) -> str:
        return self.number


# --- Prepaid credits ----------------------------------------------------------------------------


class CreditPurchase(models.Model):
    """Credits bought by card: one off-session PaymentIntent, made safe like a statement's
    PaymentAttempt (saved STARTED and `sending` before Stripe is called, an idempotency key from
    its id, reconciled when the answer was lost). Its lot is granted only once it succeeded, once
    (CreditLot.purchase is one-to-one), whether the charge's answer or the webhook says so first."""

    class Status(models.TextChoices):
        STARTED = "started", "Started"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.PROTECT, related_name="credit_purchases")
    amount_cents = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.STARTED)
    delivery = models.CharField(max_length=16, choices=PaymentAttempt.Delivery.choices, default=PaymentAttempt.Delivery.SENDING)
    sending_until = models.DateTimeField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=100, unique=True, null=True, blank=True)
    payment_intent_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    error = models.TextField(blank=True)
    failure_code = models.CharField(max_length=32, choices=PaymentAttempt.FailureCode.choices, blank=True)
    created_by = models.CharField(max_length=200)
    # An auto-recharge: the crossing of the threshold it answers (one purchase per crossing).
    crossing = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "crossing"], condition=models.Q(crossing__isnull=False),
                name="creditpurchase_one_per_crossing",
            ),
            models.CheckConstraint(condition=models.Q(amount_cents__gt=0), name="creditpurchase_positive"),
        ]
        indexes = [models.Index(fields=["created_at"], condition=models.Q(status="started"), name="creditpurchase_open")]

    def __str__(self) -> str:
        return f"credit purchase {self.pk} of workspace {self.workspace_id}: {self.status}"


class CreditLot(models.Model):
    """Credits granted at once (by staff, or bought): consumed oldest-expiring first (no expiry
    last), then oldest. `remaining` is maintained in the transaction that writes each of its
    entries and always equals their sum (the model test checks it)."""

    class Source(models.TextChoices):
        GRANT = "grant", "Granted by staff"
        PURCHASE = "purchase", "Purchased"

    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.PROTECT, related_name="credit_lots")
    source = models.CharField(max_length=16, choices=Source.choices)
    amount = models.DecimalField(max_digits=18, decimal_places=6)  # USD
    remaining = models.DecimalField(max_digits=18, decimal_places=6)  # USD, = the sum of its entries
    expires_at = models.DateTimeField(null=True, blank=True)
    note = models.CharField(max_length=300, blank=True)
    created_by = models.CharField(max_length=200)
    purchase = models.OneToOneField(CreditPurchase, on_delete=models.PROTECT, null=True, blank=True, related_name="lot")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["workspace", "created_at", "pk"]
        constraints = [
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="creditlot_positive"),
            models.CheckConstraint(
                condition=models.Q(remaining__gte=0) & models.Q(remaining__lte=models.F("amount")),
                name="creditlot_remaining_in_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_source_display()} {self.amount} ({self.remaining} left)"


class CreditEntry(models.Model):
    """The credit ledger, append-only: a workspace's balance is the sum of its entries."""

    class Kind(models.TextChoices):
        GRANT = "grant", "Grant"
        PURCHASE = "purchase", "Purchase"
        CONSUMPTION = "consumption", "Applied to a statement"
        EXPIRY = "expiry", "Expired"
        REFUND = "refund", "Refunded"
        REVERSAL = "reversal", "Given back (statement voided)"

    workspace = models.ForeignKey("workspaces.Workspace", on_delete=models.PROTECT, related_name="credit_entries")
    lot = models.ForeignKey(CreditLot, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = models.DecimalField(max_digits=18, decimal_places=6)  # USD, signed
    statement = models.ForeignKey(Statement, on_delete=models.PROTECT, null=True, blank=True, related_name="credit_entries")
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["workspace", "created_at", "pk"]
        constraints = [
            # A statement consumes from a lot once, and a voided one is given back once.
            models.UniqueConstraint(
                fields=["lot", "statement", "kind"], condition=models.Q(statement__isnull=False),
                name="creditentry_once_per_statement",
            ),
        ]
        indexes = [models.Index(fields=["workspace", "-created_at"], name="creditentry_recent")]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount:+}"


class AutoRecharge(models.Model):
    """When the live balance falls below `threshold`, buy `amount` with the saved card: once per
    crossing (`armed` is cleared when a crossing is charged, set again once the live balance is at
    or above the threshold) and at most `max_per_day` times a UTC day. A declined recharge clears
    `enabled` (with the reason) until a new card is added."""

    workspace = models.OneToOneField("workspaces.Workspace", on_delete=models.CASCADE, related_name="auto_recharge")
    enabled = models.BooleanField(default=False)
    threshold = models.DecimalField(max_digits=18, decimal_places=6)  # USD
    amount = models.DecimalField(max_digits=18, decimal_places=6)  # USD, what one recharge buys
    max_per_day = models.PositiveIntegerField(default=3)
    armed = models.BooleanField(default=True)
    crossings = models.PositiveIntegerField(default=0)  # crossings charged so far
    disabled_reason = models.CharField(max_length=300, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"auto-recharge of workspace {self.workspace_id}: {'on' if self.enabled else 'off'}"


class CreditRefund(models.Model):
    """Purchased credits paid back to the card (staff, in the admin): the REFUND entry that takes
    them out of the wallet is written and committed first (STARTED), then Stripe is asked with the
    key `credit_refund:{id}`; a refund Stripe refuses gives the credits back (a REVERSAL entry), one
    whose answer was lost is asked again with the same key by the every-minute job."""

    class Status(models.TextChoices):
        STARTED = "started", "Started"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    entry = models.OneToOneField(CreditEntry, on_delete=models.PROTECT, related_name="refund")
    purchase = models.ForeignKey(CreditPurchase, on_delete=models.PROTECT, related_name="refunds")
    amount_cents = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.STARTED)
    stripe_refund_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    error = models.TextField(blank=True)
    created_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"refund {self.pk} of credit purchase {self.purchase_id}: {self.status}"

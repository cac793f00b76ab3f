"""Invoices: billing profiles, tax rates, numbering and the invoices and credit notes."""

from __future__ import annotations

from django.db import models

from .statements import Statement


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

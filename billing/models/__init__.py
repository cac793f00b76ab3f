"""Billing's models, one module per job: plans and discounts (`plans`), statements and their lines
(`statements`), Stripe customers and payments (`payments`), invoices, billing profiles and tax
(`invoices`), prepaid credits (`credits`). Imported here so that `billing.models.X` and Django's
app registry see them all."""

from .credits import AutoRecharge, CreditEntry, CreditLot, CreditPurchase, CreditRefund
from .invoices import BillingProfile, Invoice, InvoiceSequence, TaxRate
from .payments import PaymentAttempt, StripeCustomer, StripeWebhookEvent
from .plans import Discount, Plan, PlanAssignment, PlanRate, VolumeTier
from .statements import BalanceAdjustment, CloseRun, Statement, StatementAudit, StatementLine

__all__ = [
    "AutoRecharge", "BalanceAdjustment", "BillingProfile", "CloseRun", "CreditEntry", "CreditLot", "CreditPurchase",
    "CreditRefund", "Discount", "Invoice", "InvoiceSequence", "PaymentAttempt", "Plan", "PlanAssignment", "PlanRate",
    "Statement", "StatementAudit", "StatementLine", "StripeCustomer", "StripeWebhookEvent", "TaxRate", "VolumeTier",
]  # fmt: skip

"""Voiding a finalized statement and issuing its replacement, with the audit trail and the
corrections a later statement needs (docs/money-flow.md, "Corrections")."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone as dj_timezone

from usage.partitions import archived_arrivals
from usage.validation import MAX_FUTURE

from . import statement as engine
from .close import _lock, _store
from .credits import credits_give_back
from .drafts import statement_drafts
from .errors import CloseRefused
from .invoices import credit_note_issue
from .models import BalanceAdjustment, Statement, StatementAudit
from .selectors import LIVE, Prior


@transaction.atomic
def statement_void_and_reissue(statement: Statement, *, actor: str, reason: str, now: datetime | None = None) -> Statement:
    """Void a finalized (unpaid) statement and issue its replacement from the ledger as it is now.
    Both stay, linked, with the reason in the audit trail.

    The replacement bills the very same events (same prior statement, same cutoff), the same
    carried-in balance and the same adjustments, with today's terms (plan, coupons). When a later
    statement already billed the balance the original carried forward, or the credit it left
    over, the difference becomes an adjustment on the next statement to close: never billed twice
    nor dropped."""
    now = now or dj_timezone.now()
    _lock([statement.workspace_id])
    statement = Statement.objects.select_for_update().get(pk=statement.pk)
    if statement.status in (Statement.Status.VOID, Statement.Status.PAID, Statement.Status.DRAFT):
        raise CloseRefused(f"A {statement.get_status_display().lower()} statement cannot be voided.")
    prior = Prior(statement.prior_period, statement.prior_cutoff, statement.carried_in)
    # The replacement is built from the events this statement billed: those that arrived after the
    # prior statement's cutoff (or a little before its end, billing.selectors.unbilled_q) and by
    # this one's. Once any of them are archived, a replacement would bill less than the original.
    since = None if prior.period is None else min(prior.end, prior.cutoff + MAX_FUTURE) - MAX_FUTURE
    archived = archived_arrivals(since, statement.usage_cutoff)
    if archived:
        raise CloseRefused(
            f"The events this statement bills include those that arrived in "
            f"{', '.join(f'{a.month:%Y-%m}' for a in archived)}, archived to {archived[0].path}: a reissue "
            "would drop them. Correct the amount with a balance adjustment on the next statement instead."
        )
    statement.status = Statement.Status.VOID
    statement.voided_at = now
    statement.save(update_fields=["status", "voided_at"])
    credit_note = credit_note_issue(statement, now=now)
    note = reason if credit_note is None else f"{reason} (credit note {credit_note.number} cancels invoice {credit_note.cancels.number})"
    StatementAudit.objects.create(statement=statement, actor=actor, action="voided", note=note)
    given_back = credits_give_back(statement, now=now)  # the replacement consumes again, below
    if given_back:
        StatementAudit.objects.create(
            statement=statement, actor=actor, action="credits_given_back", note=f"{given_back} of prepaid credits back in the wallet"
        )
    workspace = statement.workspace
    applied = list(statement.adjustments_applied.all())
    draft = statement_drafts(
        [workspace], statement.period, now=now, cutoff=statement.usage_cutoff,
        priors={workspace.pk: prior}, adjustments={workspace.pk: applied},
    )[workspace.pk]
    replacement = _store(draft, actor=actor, now=now, reissue_of=statement)
    StatementAudit.objects.create(statement=replacement, actor=actor, action="reissued", note=f"replaces #{statement.pk}: {reason}")
    # What the original handed on to later statements, and what the replacement hands on instead.
    old_left = -sum((a.amount for a in statement.adjustments_made.filter(kind=BalanceAdjustment.Kind.REMAINDER)), engine.ZERO)
    new_left = draft.built.unapplied_credit
    carry_taken = Statement.objects.filter(LIVE, workspace=workspace, period__gt=statement.period).exists()
    carry_delta = draft.built.carried_forward - statement.carried_forward if carry_taken else engine.ZERO
    owed = carry_delta - (new_left - old_left)
    if not carry_taken and draft.built.carried_forward != statement.carried_forward:
        StatementAudit.objects.create(
            statement=replacement, actor=actor, action="carry_changed",
            note=f"carries {draft.built.carried_forward} forward instead of {statement.carried_forward}; no later "
                 f"statement had billed it, so the next one bills the new amount",
        )
    if owed:
        BalanceAdjustment.objects.create(
            workspace=workspace, amount=owed, source=replacement, kind=BalanceAdjustment.Kind.CORRECTION,
            description=f"Correction of the {statement.period:%B %Y} statement (reissued)",
        )
        StatementAudit.objects.create(
            statement=replacement, actor=actor, action="adjustment",
            note=f"{owed:+} on the next statement: the original carried {statement.carried_forward} forward and "
                 f"left {old_left} of credit, which a later statement had taken over; this one carries "
                 f"{draft.built.carried_forward} and leaves {new_left}",
        )
    return replacement

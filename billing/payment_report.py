"""What a run of charges did, statement by statement: a State each, counted in a ChargeReport
whose summary is what `close_period` prints and whose as_dict() is what the tasks return."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .models import PaymentAttempt


class State:
    """What a run did with one statement (ChargeReport counts them). Only the run that sent an
    attempt, or settled it, reports its outcome."""

    PAID = "paid"
    DECLINED = "declined"
    NO_CARD = "no_card"
    NOT_SENT = "not_sent"  # Stripe unreachable: sent again by the next run
    PENDING = "pending"  # sent, outcome unknown: reconciled by the next run
    IN_PROGRESS = "in_progress"  # another run is charging it right now
    WAITING_RETRY = "waiting_retry"  # declined before; its next retry has not come
    ALREADY_PAID = "already_paid"
    CARRIED_FORWARD = "carried_forward"  # a total below the minimum charge, owed next month
    NOTHING_DUE = "nothing_due"
    NOT_CONFIGURED = "not_configured"  # STRIPE_SECRET_KEY is not set

    LABELS = {
        PAID: "paid",
        DECLINED: "declined",
        NO_CARD: "failed for want of a card",
        NOT_SENT: "not sent (Stripe unreachable)",
        PENDING: "pending reconciliation (Stripe's answer was lost)",
        IN_PROGRESS: "being charged by another run",
        WAITING_RETRY: "waiting for their next retry",
        ALREADY_PAID: "already paid",
        CARRIED_FORWARD: "carried forward (below the minimum charge)",
        NOTHING_DUE: "with nothing due",
        NOT_CONFIGURED: "not charged (payments are not configured: set STRIPE_SECRET_KEY)",
    }


@dataclass
class ChargeReport:
    """What a run over statements did, one State per statement."""

    counts: Counter = field(default_factory=Counter)

    def add(self, state: str) -> None:
        self.counts[state] += 1

    def __getitem__(self, state: str) -> int:
        return self.counts[state]

    def as_dict(self) -> dict[str, int]:
        """Paid and declined always, the other states when they occurred (a task's result)."""
        return {state: self.counts[state] for state in State.LABELS if state in (State.PAID, State.DECLINED) or self.counts[state]}

    def summary(self) -> str:
        """One paragraph for a person: every state that occurred, then what happens next."""
        parts = [f"{n:,} {State.LABELS[state]}" for state, n in self.as_dict().items()]
        text = "Charges: " + ", ".join(parts) + "."
        if self.counts[State.NOT_SENT]:
            text += (
                " Stripe could not be reached: the charges not sent are sent again, with the same idempotency"
                " keys, by the next run (billing.tasks.payments_retry_due, every minute) once it answers."
            )
        if self.counts[State.PENDING]:
            text += " Charges whose answer was lost are reconciled with Stripe by the next run, never sent blindly."
        if self.counts[State.IN_PROGRESS]:
            text += " Another run is charging some statements now: that run reports them."
        return text


@dataclass(frozen=True)
class Charge:
    """What one charge call did: its State, and the attempt it made or settled (if any)."""

    state: str
    attempt: PaymentAttempt | None = None

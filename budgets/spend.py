"""Ingestion's spend, as budgets see it: the hard-limit counters and the evaluation it triggers.

usage/ knows nothing of budgets: it records spend through usage.recording, and this app plugs
SpendRecording in there when it loads (budgets.apps), so the apps depend one way.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime
from decimal import Decimal

from django.db import transaction

from core.money import to_micros

from . import counters
from .evaluation import evaluation_enqueue


class SpendRecording:
    """Wraps the storing of one ingestion batch (usage.services.events_ingest):

        with SpendRecording(workspace_id, api_key_id) as spend:
            ...store the batch...
            spend.add(occurred_at, amount)   # for each event newly inserted

    After the commit (transaction.on_commit when inside one) it adds the batch's new spend to the
    month-to-date counters the allowance reads, and enqueues an evaluation of the workspace's
    budgets unless one is pending already. One Redis round trip per request on PostgreSQL (after
    the commit, with the storing transaction's id: budgets.counters), two elsewhere, none per
    event; it never fails the ingestion (errors are logged)."""

    def __init__(self, workspace_id: int, api_key_id: int):
        self.workspace_id = workspace_id
        self.api_key_id = api_key_id
        self._by_month: dict[tuple[int, int], int] = defaultdict(int)
        self._micros: dict[Decimal, int] = {}
        self.started: bool | None = False
        self.transaction_id: str | None = None

    def stored_in(self, transaction_id: str) -> None:
        self.transaction_id = transaction_id

    def add(self, occurred_at: datetime, amount: Decimal) -> None:
        # The UTC month of occurred_at (aware, UTC), as the rollups count it; a batch has a few
        # distinct amounts and months, each converted once.
        micros = self._micros.get(amount)
        if micros is None:
            micros = self._micros[amount] = to_micros(amount)
        self._by_month[(occurred_at.year, occurred_at.month)] += micros

    @property
    def micros_by_period(self) -> dict[date, int]:
        return {date(year, month, 1): micros for (year, month), micros in self._by_month.items()}

    def __enter__(self) -> SpendRecording:
        self.started = counters.ingest_started(self.workspace_id)
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        if exc_type is not None or not self.micros_by_period:
            counters.ingest_released(self.workspace_id, started=self.started)
        else:
            transaction.on_commit(self._committed, robust=True)
        return False

    def _committed(self) -> None:
        marked = counters.ingest_committed(
            self.workspace_id,
            self.api_key_id,
            dict(self.micros_by_period),
            started=self.started,
            transaction_id=self.transaction_id,
        )
        if marked:
            evaluation_enqueue(self.workspace_id)

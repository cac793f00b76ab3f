"""What ingestion tells the rest of the product about the spend it stores.

`events_ingest` wraps the storing of a batch in `spend_recording(workspace_id, api_key_id)` and
calls `.add(occurred_at, amount)` for each event newly stored, and on PostgreSQL `.stored_in(id)`
with the id of the transaction that stored them (`pg_current_xact_id()`). By default that records nothing;
an app that follows spend (budgets: the hard-limit counters and alert evaluations) installs its
recorder with `spend_recorder_install` when it loads, so usage/ depends on no other app.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Protocol


class SpendRecorder(Protocol):
    def __enter__(self) -> SpendRecorder: ...
    def __exit__(self, exc_type, exc, traceback) -> bool: ...
    def add(self, occurred_at: datetime, amount: Decimal) -> None: ...
    def stored_in(self, transaction_id: str) -> None: ...


class _NoRecording:
    def __enter__(self) -> _NoRecording:
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        return False

    def add(self, occurred_at: datetime, amount: Decimal) -> None:
        pass

    def stored_in(self, transaction_id: str) -> None:
        pass


_recorder: Callable[[int, int], SpendRecorder] = lambda workspace_id, api_key_id: _NoRecording()  # noqa: E731


def spend_recorder_install(factory: Callable[[int, int], SpendRecorder]) -> None:
    global _recorder
    _recorder = factory


def spend_recording(workspace_id: int, api_key_id: int) -> SpendRecorder:
    return _recorder(workspace_id, api_key_id)

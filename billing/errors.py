"""Errors of billing's services that a person must act on."""

from __future__ import annotations

from core.errors import ServiceError


class CloseRefused(ServiceError):
    """The period cannot be closed (not over yet, a later month is already closed, a clock ahead),
    or a statement cannot be voided. The message says why and what to do."""

    status = 409

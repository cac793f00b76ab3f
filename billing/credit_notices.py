"""Every notice about credits goes through `credit_notice`: an e-mail to the workspace's owners and
admins (one Celery task per address, enqueued after the commit, as billing.emails does), and an
event on the workspace's webhook stream when the `notifications` app is installed
(`notifications.publish`, idempotent on the workspace, type and key, in the caller's transaction)."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
from datetime import datetime
from typing import Any

from django.core.mail import EmailMessage, get_connection
from django.db import transaction

from core.jobs import enqueue
from workspaces.contacts import dashboard_url, owner_and_admin_emails
from workspaces.models import Workspace

logger = logging.getLogger(__name__)


def credit_notice(
    workspace_id: int, type: str, data: dict[str, Any], *, key: str, subject: str, text: str,
    created: datetime | None = None,
) -> None:  # fmt: skip
    """Tell the workspace's owners and admins (e-mail) and its webhook stream (when there is one)."""
    transaction.on_commit(functools.partial(_emails_enqueue, workspace_id, subject, text))
    if importlib.util.find_spec("notifications") is not None:
        notifications = importlib.import_module("notifications")
        notifications.publish(workspace_id, type, data, key=key, created=created)


def _emails_enqueue(workspace_id: int, subject: str, text: str) -> None:
    try:
        for address in owner_and_admin_emails(workspace_id):
            enqueue("billing.tasks.credit_notice_email_send", workspace_id, subject, text, address)
    except Exception:  # the broker down must not undo the ledger
        logger.exception("Could not enqueue the credit notice e-mails of workspace %s", workspace_id)


def credit_notice_email_send(workspace_id: int, subject: str, text: str, address: str) -> None:
    workspace = Workspace.objects.get(pk=workspace_id)
    body = f"{text}\n\nWorkspace: {workspace.name}\nCredits: {dashboard_url(workspace)}\n"
    get_connection().send_messages([EmailMessage(f"[Meterboard] {subject}", body, to=[address])])

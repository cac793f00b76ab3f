"""The signed event stream of billing: events (`publish`), workspace webhook endpoints, their
ordered deliveries, and the events log. README, "Event stream and workspace webhooks".

`publish` is the interface other apps call, inside their own transaction::

    import notifications
    notifications.publish(workspace.pk, "credits.low", {...}, key=f"credits:{grant.pk}:low")
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import Event


def publish(workspace_id: int, type: str, data: dict, *, key: str, created: datetime | None = None) -> Event | None:
    """Record one event and schedule its delivery to the workspace's endpoints subscribed to
    `type`; idempotent on (workspace, type, key). See notifications.services.publish."""
    from .services import publish as _publish

    return _publish(workspace_id, type, data, key=key, created=created)

"""Enqueueing background work by task name.

One direction between services and Celery tasks: a `tasks.py` imports its app's services and runs
one per task (named after it); services never import a tasks module. A service that needs work
done later enqueues it here by the task's registered name (`<app>.tasks.<service>`), usually after
its transaction commits. A test checks that every name enqueued here and every entry of
config/schedule.py is a registered task.
"""

from __future__ import annotations

from typing import Any


def enqueue(task_name: str, *args: Any, **options: Any) -> None:
    """`apply_async` on the registered task `task_name` (routing, eager mode in tests and the
    task's own options apply as if the task had been imported).

    A web process never starts a worker, so nothing has imported the apps' tasks modules there:
    the first name not yet registered imports them all (what a worker does when it starts)."""
    from celery import current_app

    tasks = current_app.tasks
    if task_name not in tasks:
        current_app.loader.import_default_modules()
    tasks[task_name].apply_async(args=args, **options)

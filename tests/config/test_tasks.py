"""Every periodic job names a registered task, and so does every name a service enqueues
(core.jobs.enqueue): a typo or a renamed task would otherwise fail only at run time."""

from __future__ import annotations

import re
from pathlib import Path

from config.celery import app
from config.schedule import CELERY_BEAT_SCHEDULE

ROOT = Path(__file__).resolve().parents[2]
APPS = ("core", "workspaces", "pricing", "usage", "billing", "budgets", "dashboard", "demo")


def registered() -> set[str]:
    app.loader.import_default_modules()
    return {name for name in app.tasks if not name.startswith("celery.")}


def test_every_schedule_entry_names_a_registered_task():
    tasks = registered()
    missing = {key: entry["task"] for key, entry in CELERY_BEAT_SCHEDULE.items() if entry["task"] not in tasks}
    assert not missing, f"schedule entries naming no task: {missing}; registered: {sorted(tasks)}"


def test_every_enqueued_name_is_a_registered_task():
    tasks = registered()
    enqueued = set()
    for app_dir in APPS:
        for path in (ROOT / app_dir).rglob("*.py"):
            enqueued |= set(re.findall(r"enqueue,?\s*\(?\s*\"([a-z_.]+)\"", path.read_text()))
    assert enqueued, "the pattern found no enqueue() call: update this test"
    assert enqueued <= tasks, f"enqueued but not registered: {sorted(enqueued - tasks)}"


def test_services_never_import_a_tasks_module():
    """One direction: tasks import services; services enqueue by name (core.jobs)."""
    offenders = []
    for app_dir in APPS:
        for path in (ROOT / app_dir).rglob("*.py"):
            if path.name == "tasks.py" or "migrations" in path.parts or "management" in path.parts:
                continue
            if re.search(r"^\s*(from \. import tasks|from \.tasks import|from \w+ import tasks|import \w+\.tasks)", path.read_text(), re.M):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"import a tasks module (enqueue by name with core.jobs.enqueue instead): {offenders}"

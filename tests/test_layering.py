"""The apps depend one way (README, "Layout"): each may import the ones below it, never one above.

    core → workspaces → notifications → pricing → usage → billing → budgets → dashboard → demo

`config` is the project on top (settings, URLs, the Celery app); apps may import only its shared
API conventions, `config.api` and `config.errors`. Imports inside functions count too: a lazy
import is still a dependency. Migrations are history and are not checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("core", "workspaces", "notifications", "pricing", "usage", "billing", "budgets", "dashboard", "demo")
SHARED_CONFIG = {"config.api", "config.errors"}


def imports_of(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def against_the_layering(app: str, root: Path = ROOT) -> list[str]:
    rank = {name: n for n, name in enumerate(LAYERS)}
    found = []
    for path in sorted((root / app).rglob("*.py")):
        if "migrations" in path.parts:
            continue
        for module in sorted(imports_of(path)):
            top = module.split(".")[0]
            if (top in rank and rank[top] > rank[app]) or (top == "config" and module not in SHARED_CONFIG):
                found.append(f"{path.relative_to(root)} imports {module}")
    return found


def test_every_app_imports_only_the_apps_below_it():
    found = [line for app in LAYERS for line in against_the_layering(app)]
    assert not found, "imports against the layering " + " → ".join(LAYERS) + ":\n" + "\n".join(found)


def test_the_check_sees_an_upward_import(tmp_path):
    """The test above can fail: a lazy import of budgets from usage is caught."""
    app = tmp_path / "usage"
    app.mkdir()
    (app / "bad.py").write_text("def f():\n    from budgets.services import budget_create\n")
    assert against_the_layering("usage", tmp_path) == ["usage/bad.py imports budgets.services"]


def test_every_app_is_in_a_layer():
    apps = {path.parent.name for path in ROOT.glob("*/apps.py")} | {"core"}
    assert apps == set(LAYERS), f"apps not placed in LAYERS (or gone): {apps ^ set(LAYERS)}"

"""plotly.js from the pinned `plotly` package, as the static file `vendor/plotly.min.js`.

The Python package ships the matching build of plotly.js in its `package_data`. Serving that copy
keeps the charts off any CDN and out of the repository, and upgrading is one line in
requirements.txt. `runserver`, whitenoise (WHITENOISE_USE_FINDERS in tests) and `collectstatic`
(production) all find it through this finder, like any other static file.
"""

from __future__ import annotations

from pathlib import Path

from django.contrib.staticfiles.finders import BaseFinder
from django.core.checks import Error
from django.core.files.storage import FileSystemStorage

PLOTLY_STATIC_PATH = "vendor/plotly.min.js"


def plotly_js_path() -> Path | None:
    try:
        import plotly
    except ImportError:
        return None
    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


class _VendorStorage(FileSystemStorage):
    """The package_data folder, with its files listed under `vendor/` (collectstatic uses `prefix`)."""

    prefix = "vendor"


class PlotlyFinder(BaseFinder):
    def check(self, **kwargs):
        if plotly_js_path() is None:
            return [
                Error(
                    "plotly.min.js not found: the dashboard's charts need the `plotly` package.",
                    hint="pip install -r requirements.txt",
                    id="dashboard.E001",
                )
            ]
        return []

    def find(self, path: str, find_all: bool = False, **kwargs):
        source = plotly_js_path() if path == PLOTLY_STATIC_PATH else None
        if source is None:
            return [] if find_all else None
        return [str(source)] if find_all else str(source)

    def list(self, ignore_patterns):
        source = plotly_js_path()
        if source is not None:
            yield source.name, _VendorStorage(location=str(source.parent))

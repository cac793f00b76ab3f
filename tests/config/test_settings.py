"""Settings come from the environment, with a working default for each and no production secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRINT = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'db': s.DATABASES['default']['ENGINE'], 'name': str(s.DATABASES['default']['NAME']), "
    "'broker': s.CELERY_BROKER_URL, 'cache': s.CACHES['default']['BACKEND'], 'debug': s.DEBUG, "
    "'hosts': s.ALLOWED_HOSTS, 'stripe': s.STRIPE_API_BASE, 'from': s.DEFAULT_FROM_EMAIL}))"
)


def settings_with(tmp_path, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in {
        "DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "STRIPE_API_BASE", "DEFAULT_FROM_EMAIL"}}
    base.update(DJANGO_SETTINGS_MODULE="config.settings", MB_VAR_DIR=str(tmp_path), **env)
    return subprocess.run([sys.executable, "-c", PRINT], cwd=ROOT, env=base, capture_output=True, text=True)


def test_a_bare_checkout_in_debug_runs_on_sqlite_and_the_embedded_broker(tmp_path):
    import json

    result = settings_with(tmp_path, DEBUG="1")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["db"] == "django.db.backends.sqlite3"
    assert found["name"] == str(tmp_path / "meterboard.sqlite3")
    assert found["broker"] == "filesystem://"
    assert found["cache"].endswith("LocMemCache")
    assert found["debug"] is True


def test_the_environment_configures_postgres_redis_and_the_rest(tmp_path):
    import json

    result = settings_with(
        tmp_path, SECRET_KEY="s3cret", DATABASE_URL="postgres://u:p@db.internal:5432/mb",
        REDIS_URL="redis://cache.internal:6379/2", ALLOWED_HOSTS="meterboard.example.com,api.example.com",
        STRIPE_API_BASE="http://127.0.0.1:8420", DEFAULT_FROM_EMAIL="billing@example.com",
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert (found["db"], found["name"]) == ("django.db.backends.postgresql", "mb")
    assert found["broker"] == "redis://cache.internal:6379/2"
    assert found["cache"].endswith("RedisCache")
    assert found["hosts"] == ["meterboard.example.com", "api.example.com"]
    assert (found["stripe"], found["from"], found["debug"]) == ("http://127.0.0.1:8420", "billing@example.com", False)


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    result = settings_with(tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr

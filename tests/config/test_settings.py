"""Settings come from the environment, with a working default for each and no production secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LONG_SECRET = "k" * 20 + "-production-secret-of-fifty-chars-or-more"
PRINT = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'db': s.DATABASES['default']['ENGINE'], 'name': str(s.DATABASES['default']['NAME']), "
    "'broker': s.CELERY_BROKER_URL, 'cache': s.CACHES['default']['BACKEND'], 'debug': s.DEBUG, "
    "'hosts': s.ALLOWED_HOSTS, 'stripe': s.STRIPE_API_BASE, 'from': s.DEFAULT_FROM_EMAIL}))"
)


def settings_with(tmp_path, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in {
        "DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "STRIPE_API_BASE", "DEFAULT_FROM_EMAIL",
        "SITE_URL", "BEHIND_PROXY", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS"}}
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
        tmp_path, SECRET_KEY=LONG_SECRET, SITE_URL="https://meterboard.example.com",
        DATABASE_URL="postgres://u:p@db.internal:5432/mb",
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


def test_production_refuses_a_short_secret_key_and_a_missing_site_url(tmp_path):
    short = settings_with(tmp_path, SECRET_KEY="s3cret", SITE_URL="https://meterboard.example.com")
    assert short.returncode != 0 and "SECRET_KEY is too short" in short.stderr
    assert "at least 50" in short.stderr
    no_site = settings_with(tmp_path, SECRET_KEY=LONG_SECRET)
    assert no_site.returncode != 0 and "SITE_URL is not set" in no_site.stderr
    insecure = settings_with(tmp_path, MB_ALLOW_INSECURE_SECRET="1", SITE_URL="https://meterboard.example.com")
    assert insecure.returncode != 0, "the old escape hatch is gone"


CHECK = "import django; django.setup(); from django.core.management import call_command; call_command('check', '--deploy', '--fail-level', 'WARNING')"


def test_the_documented_production_configuration_passes_check_deploy(tmp_path):
    """README, "Production": the settings it lists make `manage.py check --deploy` clean."""
    base = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY", "SITE_URL", "DJANGO_ALLOW_ASYNC_UNSAFE"}}
    base.update(
        DJANGO_SETTINGS_MODULE="config.settings", MB_VAR_DIR=str(tmp_path), SECRET_KEY=LONG_SECRET + "Zq9",
        SITE_URL="https://meterboard.example.com", ALLOWED_HOSTS="meterboard.example.com", BEHIND_PROXY="true",
        SECURE_SSL_REDIRECT="true", SECURE_HSTS_SECONDS="31536000", SECURE_HSTS_INCLUDE_SUBDOMAINS="true",
        SECURE_HSTS_PRELOAD="true", CSRF_TRUSTED_ORIGINS="https://meterboard.example.com",
    )
    result = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, env=base, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in (result.stdout + result.stderr)

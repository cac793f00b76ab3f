"""Settings for the test suite: config.settings with test-safe defaults.

`make test` points DATABASE_URL and REDIS_URL at PostgreSQL and Redis when they answer
(scripts/test_services.py); a bare `pytest` runs on SQLite.
"""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-" + "x" * 40)
os.environ.setdefault("SITE_URL", "http://127.0.0.1:8000")
os.environ.setdefault("MB_VAR_DIR", os.path.join(os.path.dirname(os.path.dirname(__file__)), "var", "test"))

from config.settings import *  # noqa: E402,F403

# In-process tests read mail.outbox; a Celery worker started by a test is another process, so the
# test makes it write its e-mails to files it can read (MB_TEST_EMAIL_DIR).
if os.environ.get("MB_TEST_EMAIL_DIR"):
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = os.environ["MB_TEST_EMAIL_DIR"]
else:
    EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
WHITENOISE_AUTOREFRESH = True
STATIC_ROOT.mkdir(exist_ok=True)  # noqa: F405  (whitenoise warns when it is missing)
WHITENOISE_USE_FINDERS = True

# A replica alias for tests/config/test_replicas.py: a second connection to the test database
# (Django's test mirror). Not in DATABASE_REPLICAS, so no read goes to it unless a test says so.
if DATABASES["default"]["ENGINE"].endswith("postgresql") and not DATABASE_REPLICAS:  # noqa: F405
    DATABASES["replica_1"] = {**DATABASES["default"], "TEST": {"MIRROR": "default"}}  # noqa: F405

# A beat job every MB_BEAT_PROBE_SECONDS seconds onto a queue of its own, which no worker reads:
# tests/config/test_beat.py counts its messages to see how many beats run the schedule.
if os.environ.get("MB_BEAT_PROBE_SECONDS"):
    CELERY_BEAT_SCHEDULE = {  # noqa: F405
        **CELERY_BEAT_SCHEDULE,  # noqa: F405
        "beat-probe": {
            "task": "config.beat_probe",
            "schedule": float(os.environ["MB_BEAT_PROBE_SECONDS"]),
            "options": {"queue": "mb-beat-probe", "expires": 300},
        },
    }

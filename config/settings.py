"""Meterboard settings, read from the environment (12-factor).

Every setting has a working default so that a bare checkout runs (`make run`); secrets have no
production default. The README lists every variable.
"""

from __future__ import annotations

import os
import re
import zlib
from decimal import Decimal
from pathlib import Path

import dj_database_url

from config import schedule

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("MB_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not DEBUG and len(SECRET_KEY) < 50:
    raise RuntimeError(
        ("SECRET_KEY is too short" if SECRET_KEY else "SECRET_KEY is not set")
        + ": outside DEBUG it must be at least 50 random characters, e.g. "
        "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`. For development run with DEBUG=1 "
        "(`make run` does this)."
    )
SECRET_KEY = SECRET_KEY or "insecure-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "workspaces",
    "notifications",
    "pricing",
    "billing",
    "usage",
    "budgets",
    "dashboard",
    "demo",
]

MIDDLEWARE = [
    "core.logcontext.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "core.replicas.PrimaryAfterWriteMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboard.context_processors.dashboard",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------
DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'meterboard.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        # Writers queue instead of failing at once; IMMEDIATE takes the write lock at BEGIN so
        # two writers never deadlock upgrading a read lock.
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not :memory:, so that the concurrency tests' threads share one database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-meterboard.sqlite3")}
# Bounded waits on PostgreSQL (or a pooler in front of it), for every alias: connecting gives up
# after DATABASE_CONNECT_TIMEOUT seconds (libpq would wait for the kernel's own SYN retries, more than
# two minutes, psycopg for 130 s: longer than gunicorn's worker timeout); and TCP keepalives with a
# user timeout find a server that vanished without a word (a lost machine, a cut network) while a
# query waits, within about DATABASE_DEAD_PEER_SECONDS. Neither cuts a slow query on a live server,
# whose kernel answers the keepalives (a long month-end close is fine).
DATABASE_CONNECT_TIMEOUT = max(2, int(os.environ.get("DATABASE_CONNECT_TIMEOUT", "5")))  # libpq's minimum is 2
DATABASE_DEAD_PEER_SECONDS = max(3, int(os.environ.get("DATABASE_DEAD_PEER_SECONDS", "30")))
_POSTGRES_TIMEOUTS = {
    "connect_timeout": DATABASE_CONNECT_TIMEOUT,
    "keepalives": 1,
    "keepalives_idle": DATABASE_DEAD_PEER_SECONDS // 2,  # quiet this long, then 3 probes in the other half
    "keepalives_interval": max(1, DATABASE_DEAD_PEER_SECONDS // 6),
    "keepalives_count": 3,
    "tcp_user_timeout": DATABASE_DEAD_PEER_SECONDS * 1000,  # ms: data sent and never acknowledged
}


def postgres_timeouts(database: dict) -> dict:
    """`database` (a DATABASES entry) with the bounded waits above, when it is PostgreSQL."""
    if database["ENGINE"] == "django.db.backends.postgresql":
        database["OPTIONS"] = {**_POSTGRES_TIMEOUTS, **database.get("OPTIONS", {})}
    return database


postgres_timeouts(DATABASES["default"])
# Read replicas (core.replicas): the read-only pages and the usage API read from them while their
# lag is within REPLICA_MAX_LAG_SECONDS; everything else uses the primary (DATABASE_URL).
DATABASE_REPLICAS: list[str] = []  # the aliases reads may go to
for _number, _url in enumerate(env_list("DATABASE_REPLICA_URLS", ""), start=1):
    DATABASES[f"replica_{_number}"] = postgres_timeouts(
        {**dj_database_url.parse(_url, conn_max_age=60), "TEST": {"MIRROR": "default"}}
    )
    DATABASE_REPLICAS.append(f"replica_{_number}")
REPLICA_MAX_LAG_SECONDS = float(os.environ.get("REPLICA_MAX_LAG_SECONDS", "5"))
DATABASE_ROUTERS = ["core.replicas.ReplicaRouter"]
# Ingestion's statement is prepared once per PostgreSQL connection (core.prepared); turn it off
# behind a pooler in transaction mode (PgBouncer pool_mode = transaction).
# Behind a pooler in transaction mode (PgBouncer pool_mode = transaction), consecutive transactions
# may run on different server connections: no server-side cursors (Django's .iterator() keeps one
# open across them), and no prepared statements unless said otherwise (PgBouncer keeps them only
# from 1.21 on, with max_prepared_statements; Debian 12 ships 1.18).
DATABASE_TRANSACTION_POOLING = env_bool("DATABASE_TRANSACTION_POOLING", False)
if DATABASE_TRANSACTION_POOLING:
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
DATABASE_PREPARED_STATEMENTS = env_bool("DATABASE_PREPARED_STATEMENTS", not DATABASE_TRANSACTION_POOLING)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, cache and Celery ------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
# Every Redis client (the cache with the throttles, the broker as web processes publish to it, the
# beat's lock and schedule) gives up connecting and waiting for an answer after this many seconds,
# so that a Redis that stopped answering costs a request an error, not a worker held until
# gunicorn's timeout. (The hard limit's counters wait 1 s at most: budgets.counters.)
REDIS_TIMEOUT_SECONDS = float(os.environ.get("REDIS_TIMEOUT_SECONDS", "5"))
_REDIS_TIMEOUTS = {"socket_timeout": REDIS_TIMEOUT_SECONDS, "socket_connect_timeout": REDIS_TIMEOUT_SECONDS}
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "mb",
            "OPTIONS": _REDIS_TIMEOUTS,
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    # Tasks are acknowledged late (below): a message a worker took stays in Redis, unacknowledged,
    # until its task ends; if the worker dies, Redis hands it out again once it has been out this
    # long. So it must exceed the longest a task runs: the month-end close and charge
    # (billing.tasks, several minutes at 10,000 workspaces; idempotent, so a second run after a
    # crash finishes it and charges nobody twice). A countdown a worker holds counts too: budgets
    # hold at most a minute; a close retried after a failure may wait longer than the timeout
    # (its backoff reaches 3 h) and is then handed out again, which idempotence makes harmless.
    # An hour, kombu's default, made explicit. Alerts never wait for it: what a dead worker held
    # is found again from the database within 2 minutes (budgets.tasks).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600, **_REDIS_TIMEOUTS}
    # Beat on any number of nodes (issue 13): celery-redbeat keeps the schedule's state in Redis and
    # lets one beat at a time run it, under a lock the others wait for. The running beat renews the
    # lock at least every CELERY_BEAT_MAX_LOOP_INTERVAL seconds; when it dies, the lock expires
    # after BEAT_LOCK_SECONDS and a waiting beat takes over, from the state in Redis (a job due
    # meanwhile runs then; each is safe to run late: config/schedule.py).
    CELERY_BEAT_SCHEDULER = "redbeat.RedBeatScheduler"
    CELERY_REDBEAT_REDIS_URL = REDIS_URL
    CELERY_REDBEAT_REDIS_OPTIONS = _REDIS_TIMEOUTS
    CELERY_REDBEAT_KEY_PREFIX = os.environ.get("MB_REDBEAT_PREFIX") or (
        f"mb:redbeat:{zlib.crc32(str(DATABASES['default']['NAME']).encode()):08x}"
    )
    CELERY_REDBEAT_LOCK_TIMEOUT = max(2, int(os.environ.get("BEAT_LOCK_SECONDS", "30")))
    # The running beat renews its lock only as it ticks, so the lock must outlive several ticks: with
    # the tick as long as the lock (5 s and 5 s, as the cluster test had it), a tick a moment late on
    # a busy machine found the lock expired and the beat exited (LockNotOwnedError), leaving the
    # schedule to nobody until another beat started. A fifth of the lock, 1 to 5 s.
    CELERY_BEAT_MAX_LOOP_INTERVAL = max(1, min(5, CELERY_REDBEAT_LOCK_TIMEOUT // 5))
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    # The embedded broker: kombu's filesystem transport, shared by web, worker and beat through
    # folders under var/celery/. Enough for one machine; use Redis in production.
    _celery_dir = VAR_DIR / "celery"
    for _sub in ("in", "processed", "control"):
        (_celery_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_celery_dir / "in"),
        "data_folder_out": str(_celery_dir / "in"),
        "processed_folder": str(_celery_dir / "processed"),
        "control_folder": str(_celery_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Every periodic job lives in config/schedule.py, each with a comment saying why it runs.
CELERY_BEAT_SCHEDULE = schedule.CELERY_BEAT_SCHEDULE

# --- Auth, i18n, static -----------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# plotly.js is served from the pinned `plotly` package's own copy (static/vendor/plotly.min.js):
# no CDN, no copy in the repository, and collectstatic picks it up like any other file.
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "dashboard.staticfiles.PlotlyFinder",
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# A batch of 1,000 events with metadata fits well inside this; larger bodies get a 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("MB_MAX_BODY_BYTES", 8 * 1024 * 1024))

# --- E-mail -----------------------------------------------------------------------------------
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Meterboard <billing@meterboard.local>")
EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
# A hung mail server fails a send after this many seconds (it is retried) instead of holding a worker.
EMAIL_TIMEOUT = int(os.environ.get("EMAIL_TIMEOUT", "10"))
# Where people reach Meterboard: links in e-mails are built on it. Required outside DEBUG.
SITE_URL = os.environ.get("SITE_URL", "http://127.0.0.1:8000" if DEBUG else "").rstrip("/")
if not SITE_URL:
    raise RuntimeError("SITE_URL is not set: outside DEBUG, set it to where people reach Meterboard, e.g. "
                       "https://meterboard.example.com (links in e-mails are built on it).")

# --- Invoices ---------------------------------------------------------------------------------
# Who issues the invoices (billing.invoices): printed on each one, copied into it when issued.
INVOICE_SELLER = {
    "legal_name": os.environ.get("INVOICE_SELLER_NAME", "Meterboard Demo Ltd"),
    "address": os.environ.get("INVOICE_SELLER_ADDRESS", "1 Example Street\nLondon EC1A 1AA\nUnited Kingdom").replace("\\n", "\n"),
    "tax_id": os.environ.get("INVOICE_SELLER_TAX_ID", ""),
    "email": os.environ.get("INVOICE_SELLER_EMAIL", "billing@meterboard.local"),
}
INVOICE_NUMBER_PREFIX = os.environ.get("INVOICE_NUMBER_PREFIX", "MB")
if not re.fullmatch(r"[A-Z0-9]{1,8}", INVOICE_NUMBER_PREFIX):
    raise RuntimeError("INVOICE_NUMBER_PREFIX must be 1-8 capital letters or digits, e.g. MB.")

# --- Stripe -----------------------------------------------------------------------------------
STRIPE_SECRET_KEY = os.environ.get("STRIPE_SECRET_KEY", "")
STRIPE_API_BASE = os.environ.get("STRIPE_API_BASE", "https://api.stripe.com")
STRIPE_TIMEOUT_SECONDS = float(os.environ.get("STRIPE_TIMEOUT_SECONDS", "30"))  # the wait for one answer
STRIPE_WEBHOOK_SECRET = os.environ.get("STRIPE_WEBHOOK_SECRET", "")
# The browser side of adding a card (Stripe.js Elements): the publishable key, and where Stripe.js
# is loaded from (tests point it at localstripe's stand-in, <localstripe>/js.stripe.com/v3/).
STRIPE_PUBLISHABLE_KEY = os.environ.get("STRIPE_PUBLISHABLE_KEY", "")
STRIPE_JS_URL = os.environ.get("STRIPE_JS_URL", "https://js.stripe.com/v3/")
# Day of the month (1-28, UTC) on which the previous month is closed and charged. Read from the
# environment (BILLING_CLOSE_DAY, default 2) by config/schedule.py, which beat's crontab uses.
BILLING_CLOSE_DAY = schedule.BILLING_CLOSE_DAY

# --- The usage ledger at scale (issue 13; docs/scaling.md) -------------------------------------
# Where `manage.py archive_usage YYYY-MM` writes a month's events (gzipped CSV) before it drops them.
USAGE_ARCHIVE_DIR = Path(os.environ.get("USAGE_ARCHIVE_DIR", VAR_DIR / "archive"))
# How long an event id is remembered after it arrived, so that the same id sent again is answered
# as a duplicate (or a conflict) and never stored twice: at least 400 days (usage.receipts).
EVENT_RECEIPT_DAYS = int(os.environ.get("EVENT_RECEIPT_DAYS", "400"))

# --- Budgets and alerts -----------------------------------------------------------------------
# Webhook URLs that resolve to private, loopback or link-local addresses are refused (when a budget
# is saved and again before every delivery) unless this is on, so that a budget's webhook cannot
# reach into this server's own network. On by default only in DEBUG, for local receivers.
WEBHOOK_ALLOW_PRIVATE = env_bool("WEBHOOK_ALLOW_PRIVATE", DEBUG)
# One wall-clock deadline per webhook attempt: DNS, connect, TLS, send and every byte of the
# answer (kept within 0.1-60 s by budgets.webhooks).
WEBHOOK_TIMEOUT_SECONDS = float(os.environ.get("WEBHOOK_TIMEOUT_SECONDS", "5"))
# Webhook attempts of one workspace in flight at once; more are deferred a few seconds, never dropped.
WEBHOOK_CONCURRENCY_PER_WORKSPACE = int(os.environ.get("WEBHOOK_CONCURRENCY_PER_WORKSPACE", "2"))
# Test alerts a workspace may send per hour (the API answers 429 with Retry-After past it).
BUDGET_TEST_ALERTS_PER_HOUR = int(os.environ.get("BUDGET_TEST_ALERTS_PER_HOUR", "10"))
# Spend anomaly alerts (budgets.anomalies): the score threshold of workspaces without a workspace
# budget (a budget's own anomaly_threshold applies otherwise); 0 turns that default off.
SPEND_ANOMALY_THRESHOLD = os.environ.get("SPEND_ANOMALY_THRESHOLD", "4.0")
try:
    if not 0 <= Decimal(SPEND_ANOMALY_THRESHOLD) <= 100:
        raise ValueError
except (ArithmeticError, ValueError):
    raise RuntimeError(f"SPEND_ANOMALY_THRESHOLD={SPEND_ANOMALY_THRESHOLD!r}: a score from 2 to 20 (4.0 by default), or 0 for off.") from None

# --- The event stream (notifications; README "Event stream and workspace webhooks") -------------
# Days an event of the stream (with its deliveries and their attempts) is kept after its `created`:
# beat's daily notifications-events-prune deletes older ones once none of their deliveries is still
# pending or retrying. At least 7 (notifications.retention): a smaller value counts as 7.
EVENT_RETENTION_DAYS = int(os.environ.get("EVENT_RETENTION_DAYS", "30"))

# --- REST framework and OpenAPI ---------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "workspaces.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    # Fixed windows in the cache (workspaces.throttling): 429 with Retry-After past a limit.
    # Unauthenticated calls are throttled in workspaces.authentication (before DRF's 401).
    "DEFAULT_THROTTLE_CLASSES": ["workspaces.throttling.ApiKeyThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Meterboard API",
    "DESCRIPTION": (
        "Usage ingestion, pricing and spend reporting for the image-generation API. "
        "Machine calls authenticate with `Authorization: Bearer <api key secret>`."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "config.openapi.document_errors"],
}

# --- Logging ----------------------------------------------------------------------------------
# LOG_FORMAT=json: one JSON object a line, with the request's id, workspace and API key prefix, and
# secrets cut out (core.logcontext); otherwise plain lines for a person reading a terminal.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "plain").lower()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "core.logcontext.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json" if LOG_FORMAT == "json" else "plain"}
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}, "stripe": {"level": "WARNING"}},
}

# --- Metrics and error reporting (issue 14; README "Metrics and error reports") -----------------
# GET /metrics (config.metrics) answers a request carrying `Authorization: Bearer <METRICS_TOKEN>`
# (when set), or one from an address in METRICS_ALLOWED_IPS (CIDRs; "" lets only the token in).
# PROMETHEUS_MULTIPROC_DIR, read from the environment by prometheus_client itself, makes every
# process of the machine write its metrics there for one scrape to add up (core.metrics).
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
METRICS_ALLOWED_IPS = env_list("METRICS_ALLOWED_IPS", "127.0.0.1/32,::1/128")
# Errors go to Sentry when SENTRY_DSN is set (config.sentry), with secrets cut as in the JSON logs.
SENTRY_DSN = os.environ.get("SENTRY_DSN", "")
SENTRY_ENVIRONMENT = os.environ.get("SENTRY_ENVIRONMENT", "development" if DEBUG else "production")
SENTRY_RELEASE = os.environ.get("SENTRY_RELEASE", "")
SENTRY_TRACES_SAMPLE_RATE = float(os.environ.get("SENTRY_TRACES_SAMPLE_RATE", "0"))
if SENTRY_DSN:
    from config.sentry import sentry_init

    sentry_init(SENTRY_DSN, environment=SENTRY_ENVIRONMENT, release=SENTRY_RELEASE or None,
                traces_sample_rate=SENTRY_TRACES_SAMPLE_RATE)  # fmt: skip

# --- Throttles (workspaces.throttling; README "Security") ---------------------------------------
API_RATE_PER_KEY = os.environ.get("API_RATE_PER_KEY", "60000/min")
API_RATE_ANONYMOUS = os.environ.get("API_RATE_ANONYMOUS", "120/min")
API_AUTH_FAILURES_PER_ADDRESS = os.environ.get("API_AUTH_FAILURES_PER_ADDRESS", "30/min")
LOGIN_FAILURES_PER_ACCOUNT = int(os.environ.get("LOGIN_FAILURES_PER_ACCOUNT", "5"))
LOGIN_FAILURES_PER_ADDRESS = int(os.environ.get("LOGIN_FAILURES_PER_ADDRESS", "20"))
LOGIN_LOCKOUT_SECONDS = int(os.environ.get("LOGIN_LOCKOUT_SECONDS", "60"))
LOGIN_LOCKOUT_MAX_SECONDS = int(os.environ.get("LOGIN_LOCKOUT_MAX_SECONDS", "3600"))
PASSWORD_RESETS_PER_ADDRESS = int(os.environ.get("PASSWORD_RESETS_PER_ADDRESS", "3"))
PASSWORD_RESETS_PER_CLIENT = int(os.environ.get("PASSWORD_RESETS_PER_CLIENT", "20"))

# --- HTTPS, proxies and browser policies --------------------------------------------------------
# Only when a proxy in front sets them are X-Forwarded-Proto (HTTPS) and X-Forwarded-For (the
# client's address, for throttles) believed; otherwise any client could forge them.
BEHIND_PROXY = env_bool("BEHIND_PROXY", False)
if BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
X_FRAME_OPTIONS = "DENY"
MIDDLEWARE.insert(1, "config.security.ContentSecurityPolicyMiddleware")
if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)

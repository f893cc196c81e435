"""Settings for the test suite: a real PostgreSQL from DATABASE_URL."""

import os

import django
import environ

env = environ.Env()

SECRET_KEY = "tests-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "tests.urls"
STATIC_URL = "/static/"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_supaqueue",
    "tests.testapp",
    "example_project.example_app",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {"default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/supaqueue")}
DATABASES["default"]["TEST"] = {"NAME": os.environ.get("SUPAQUEUE_TEST_DB", "test_supaqueue")}
# A second alias for the same database, as a LISTEN_DATABASE that bypasses a pooler would be.
DATABASES["listen"] = {**DATABASES["default"], "TEST": {"MIRROR": "default"}}

SUPAQUEUE = {
    "POLL_INTERVAL": float(os.environ.get("SUPAQUEUE_POLL_INTERVAL", "5")),
    "HEARTBEAT_INTERVAL": float(os.environ.get("SUPAQUEUE_HEARTBEAT_INTERVAL", "1")),
    "LEASE_DURATION": float(os.environ.get("SUPAQUEUE_LEASE_DURATION", "10")),
    "RETRY_BACKOFF": 0.0,
    "SHUTDOWN_GRACE": float(os.environ.get("SUPAQUEUE_SHUTDOWN_GRACE", "25")),
    "RATE_LIMIT_MARGIN": float(os.environ.get("SUPAQUEUE_RATE_LIMIT_MARGIN", "0.1")),
    "INTERRUPT_GRACE": float(os.environ.get("SUPAQUEUE_INTERRUPT_GRACE", "30")),
    # Calls to HTTP queues on the async lane (0: on job threads, as tests of the thread path need).
    "ASYNC_CONCURRENCY": int(os.environ.get("SUPAQUEUE_ASYNC_CONCURRENCY", "100")),
}
if os.environ.get("SUPAQUEUE_TEST_PG_OPTIONS"):
    # Server settings for every connection, as a project's OPTIONS would set them
    # (e.g. "-c lock_timeout=200ms"): the workers must live with what they cause.
    DATABASES["default"]["OPTIONS"] = {"options": os.environ["SUPAQUEUE_TEST_PG_OPTIONS"]}
# Behind PgBouncer (tests/test_pgbouncer.py), the settings docs/howto/many-hosts.md gives:
# SUPAQUEUE_TEST_NO_PREPARE=1 turns prepared statements off (PgBouncer before 1.21),
# SUPAQUEUE_TEST_LISTEN_DATABASE_URL makes "listen" a direct LISTEN_DATABASE, and
# SUPAQUEUE_TEST_LISTEN=0 polls instead.
if os.environ.get("SUPAQUEUE_TEST_NO_PREPARE"):
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = None
if os.environ.get("SUPAQUEUE_TEST_LISTEN_DATABASE_URL"):
    DATABASES["listen"] = env.db_url_config(os.environ["SUPAQUEUE_TEST_LISTEN_DATABASE_URL"])
    SUPAQUEUE["LISTEN_DATABASE"] = "listen"
if os.environ.get("SUPAQUEUE_TEST_LISTEN") == "0":
    SUPAQUEUE["LISTEN"] = False

if django.VERSION >= (6, 0):
    # Django's Tasks API, run by the queue (tests/test_backends.py); QUEUES=[]: any queue name.
    TASKS = {"default": {"BACKEND": "django_supaqueue.backends.SupaqueueBackend", "QUEUES": []}}

# SUPAQUEUE_TEST_NO_LOGGING=1: a project without a LOGGING setting, as runworkers' console tests need.
if not os.environ.get("SUPAQUEUE_TEST_NO_LOGGING"):
    LOGGING = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"console": {"class": "logging.StreamHandler"}},
        "loggers": {
            "django_supaqueue": {
                "handlers": ["console"],
                "level": os.environ.get("SUPAQUEUE_LOG_LEVEL", "WARNING"),
            }
        },
    }

"""Settings of the example project, read from the environment with django-environ.

DATABASE_URL         PostgreSQL to use. ``example_project/run.py`` sets it to an
                     embedded server when it is unset; ``manage.py`` run by hand
                     falls back to postgres://postgres@127.0.0.1:5432/supaqueue_example.
SECRET_KEY           Django's secret key (a development default is used when unset)
DEBUG                "true" / "false" (default true)
ALLOWED_HOSTS        comma-separated (default 127.0.0.1,localhost)
SUPAQUEUE_LOG_LEVEL  level of the queue's log lines (default INFO: one line per job)
DEMO_WEBHOOK_SECRET  the secret the demo's HTTP queue sends to the example's own
                     webhook (/demo/webhook/), which checks it; a local default
                     is used when unset. Set it anywhere the server is reachable.
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env(DEBUG=(bool, True))

SECRET_KEY = env("SECRET_KEY", default="example-only-not-secret")
DEBUG = env("DEBUG")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "example_project.urls"
STATIC_URL = "static/"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_supaqueue",
    "example_project.example_app",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
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

DATABASES = {
    "default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/supaqueue_example")
}

SUPAQUEUE = {
    # The demo's web server, worker and PostgreSQL share one machine's cores: a wider margin keeps
    # its rate-limited webhook calls from being given back as late while the machine is busy.
    "RATE_LIMIT_MARGIN": 0.5,
    # Applied when the queue is first created; after that the admin is the authority.
    "QUEUES": {"emails": {"concurrency_limit": 2}},
    # Secrets of HTTP queues, by alias: the "webhooks" queue row names "demo-webhook"
    # (example_app.views.SECRET_ALIAS), and the view it calls checks the same value.
    # Bound to the hosts the demo's webhook queue calls (the example's own server).
    "HTTP_SECRETS": {
        "demo-webhook": {
            "value": env("DEMO_WEBHOOK_SECRET", default="example-only-webhook-secret"),
            "hosts": ["127.0.0.1", "localhost"],
        }
    },
    # Recurring jobs: runworkers syncs these rows at start and its workers fire them on time.
    # A real report would run nightly ("0 2 * * *"); the demo's runs every minute, so it shows.
    "SCHEDULES": {
        "orders-report": {"task": "example_project.example_app.tasks.report_orders", "cron": "* * * * *"},
    },
}

# The demo's failures on purpose (the inventory sync's first calls) read as expected, not as errors.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"expected_failures": {"()": "example_project.example_app.logs.MarkExpectedFailures"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["expected_failures"]}},
    "loggers": {
        "django_supaqueue": {"handlers": ["console"], "level": env("SUPAQUEUE_LOG_LEVEL", default="INFO")}
    },
}

"""A project of one app, the docs' shop, whose migration installs a job trigger.

tests/test_job_trigger_migrations.py and tests/test_migrations.py migrate
brand-new databases with it (DATABASE_URL, see project.py). The app label "shop"
sorts before "supaqueue", so on a fresh database Django runs the shop's trigger
migration as soon as supaqueue's 0001 is applied, before any supaqueue migration
added later: why the operation reads the queue table's columns from the
migration's state.
"""

import environ

SECRET_KEY = "tests-not-secret"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django_supaqueue", "tests.shop"]
DATABASES = {"default": environ.Env().db("DATABASE_URL")}
# Settings written into the queue row when the trigger's migration creates it.
SUPAQUEUE = {"QUEUES": {"default": {"max_attempts": 7, "priority": 3}}}

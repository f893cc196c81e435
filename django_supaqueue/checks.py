"""System checks: catch configuration mistakes at ``manage.py check`` time, not at 3 a.m."""

from __future__ import annotations

from typing import Any

from django.core import checks

from . import conf


@checks.register("supaqueue")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    for key in conf.unknown_keys():
        errors.append(
            checks.Warning(
                f"SUPAQUEUE[{key!r}] is not a django-supaqueue setting and is ignored.",
                hint=f"Known settings: {', '.join(sorted(conf.DEFAULTS))}.",
                id="supaqueue.W001",
            )
        )
    from django.conf import settings

    alias = conf.get("DATABASE")
    db = settings.DATABASES.get(alias)
    if db is None:
        errors.append(
            checks.Error(
                f"SUPAQUEUE['DATABASE'] names {alias!r}, which is not in DATABASES.", id="supaqueue.E001"
            )
        )
    elif "postgresql" not in db.get("ENGINE", ""):
        errors.append(
            checks.Error(
                f"DATABASES[{alias!r}] must be PostgreSQL (django.db.backends.postgresql) "
                "for django-supaqueue.",
                id="supaqueue.E002",
            )
        )
    for key, low in (("MAX_ATTEMPTS", 1), ("CONCURRENCY", 1), ("PROCESSES", 1), ("CLAIM_BATCH", 1)):
        value = conf.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            errors.append(
                checks.Error(
                    f"SUPAQUEUE[{key!r}] must be an integer >= {low}, not {value!r}.", id="supaqueue.E003"
                )
            )
    for key in (
        "POLL_INTERVAL",
        "HEARTBEAT_INTERVAL",
        "LEASE_DURATION",
        "RETRY_BACKOFF",
        "RETRY_BACKOFF_MAX",
    ):
        value = conf.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            errors.append(
                checks.Error(f"SUPAQUEUE[{key!r}] must be a number >= 0, not {value!r}.", id="supaqueue.E004")
            )
    if not errors and conf.get("LEASE_DURATION") <= conf.get("HEARTBEAT_INTERVAL"):
        errors.append(
            checks.Error(
                "SUPAQUEUE['LEASE_DURATION'] must be longer than HEARTBEAT_INTERVAL, or leases expire "
                "between heartbeats and running jobs are retried while they still run.",
                id="supaqueue.E005",
            )
        )
    priority = conf.get("PRIORITY")
    if not isinstance(priority, int) or not -100 <= priority <= 100:
        errors.append(
            checks.Error("SUPAQUEUE['PRIORITY'] must be an integer in -100..100.", id="supaqueue.E006")
        )
    return errors


@checks.register("supaqueue", checks.Tags.database)
def check_http_secrets(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Every HTTP queue's secret alias is in SUPAQUEUE['HTTP_SECRETS'] (migrate, check --database)."""
    secrets = conf.get("HTTP_SECRETS")
    if not isinstance(secrets, dict) or not all(isinstance(v, str) for v in secrets.values()):
        return [
            checks.Error(
                "SUPAQUEUE['HTTP_SECRETS'] must be a dict of alias -> secret string.", id="supaqueue.E007"
            )
        ]
    if not databases or conf.get("DATABASE") not in databases:
        return []  # database checks run only when asked to (migrate, check --database)
    from django.db import DatabaseError

    from .models import Queue

    try:
        queues = list(
            Queue.objects.using(conf.get("DATABASE"))
            .exclude(http_url="")
            .exclude(http_secret="")
            .values_list("name", "http_secret")
        )
    except DatabaseError:  # not migrated yet: nothing to check
        return []
    return [
        checks.Error(
            f"HTTP queue {name!r} names the secret alias {alias!r}, which is not in "
            "SUPAQUEUE['HTTP_SECRETS'].",
            hint="Add it to SUPAQUEUE['HTTP_SECRETS'] in settings (from the environment), or change the "
            "queue's secret alias; its calls fail until then.",
            id="supaqueue.E008",
        )
        for name, alias in queues
        if alias not in secrets
    ]

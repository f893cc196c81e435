"""System checks of how the project is deployed: HTTP queues' secrets, and a pooler in front of PostgreSQL."""

from __future__ import annotations

from typing import Any

from django.core import checks

from .. import conf


@checks.register("supaqueue", checks.Tags.database)
def check_http_secrets(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Every HTTP queue's secret alias is in SUPAQUEUE['HTTP_SECRETS'] (migrate, check --database)."""
    from django.core.exceptions import ImproperlyConfigured

    from ..secrets import configured

    try:
        secrets = configured()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="supaqueue.E007")]
    if not databases or conf.get("DATABASE") not in databases:
        return []  # database checks run only when asked to (migrate, check --database)
    from django.db import DatabaseError

    from ..models import Queue

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


@checks.register("supaqueue")
def check_http_secret_hosts(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Secret aliases bound to no host: whoever may change a queue can send them anywhere."""
    from django.core.exceptions import ImproperlyConfigured

    from ..secrets import configured

    try:
        secrets = configured()
    except ImproperlyConfigured:
        return []  # check_http_secrets reports it
    return [
        checks.Warning(
            f"SUPAQUEUE['HTTP_SECRETS'][{alias!r}] is not bound to hosts: a staff user who may change "
            "queues can point one that uses it at a server of their own and receive the secret.",
            hint="Write it as {'value': ..., 'hosts': ['fn.example.com']}, naming the hosts its queues "
            "call; a queue whose URL leaves them is refused.",
            id="supaqueue.W007",
        )
        for alias, secret in sorted(secrets.items())
        if not secret.hosts
    ]


@checks.register("supaqueue", checks.Tags.database)
def check_pooler(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """LISTEN and prepared statements through a pooler that lends connections per transaction.

    Only the aliases Django lets a database check use (migrate, check --database) are probed:
    two short connections each (see worker/pooler.py).
    """
    import psycopg
    from django.conf import settings
    from django.db import connections

    from ..queue.prepared import preparing_turned_off
    from ..worker import pooler

    alias, listen_alias = conf.get("DATABASE"), conf.get("LISTEN_DATABASE") or conf.get("DATABASE")
    seen: dict[str, pooler.Pooling] = {}
    for name in {alias, listen_alias} & set(databases or ()) & set(settings.DATABASES):
        if "postgresql" not in settings.DATABASES[name].get("ENGINE", ""):
            continue  # E002
        try:
            seen[name] = pooler.probe(name)
        except psycopg.Error:
            continue  # an unreachable database is for migrate and the workers to report
    errors: list[checks.CheckMessage] = []
    if (queue := seen.get(alias)) and queue.statement_mode:
        errors.append(
            checks.Error(
                f"DATABASES[{alias!r}] goes through a pooler in statement mode, which refuses transactions: "
                "workers and enqueue calls inside atomic() cannot work through it.",
                hint="Use PgBouncer's transaction or session mode for this database.",
                id="supaqueue.E040",
            )
        )
    elif queue and queue.pooled and not queue.keeps_prepared and not preparing_turned_off(connections[alias]):
        errors.append(
            checks.Warning(
                f"DATABASES[{alias!r}] goes through a pooler that does not carry prepared statements "
                "from one server connection to the next (PgBouncer before 1.21, or max_prepared_statements "
                "= 0), but workers and the enqueue prepare theirs: they fail with 'prepared statement ... "
                "does not exist' or '... already exists'.",
                hint=f"Set DATABASES[{alias!r}]['OPTIONS']['prepare_threshold'] = None, or use PgBouncer "
                "1.22+ with max_prepared_statements > 0.",
                id="supaqueue.W041",
            )
        )
    if conf.get("LISTEN") and (listen := seen.get(listen_alias)) and listen.pooled:
        errors.append(
            checks.Warning(
                f"Workers LISTEN for new jobs and cancellations through DATABASES[{listen_alias!r}], which "
                "goes through a pooler in transaction mode: notifications are lost, jobs wait for the poll "
                "and a cancelled running job is not interrupted.",
                hint="Point SUPAQUEUE['LISTEN_DATABASE'] at an entry of DATABASES that connects directly, "
                "or set SUPAQUEUE['LISTEN'] = False to poll every POLL_INTERVAL seconds.",
                id="supaqueue.W040",
            )
        )
    return errors

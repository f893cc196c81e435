"""The worker's own database connections, built from Django's settings.

Workers use plain psycopg connections rather than Django's: they need
autocommit, explicit transactions, prepared statements and a blocking
LISTEN, none of which should leak into the ORM connections that task code uses.
"""

from __future__ import annotations

from typing import Any

import psycopg
from django.db import connections

from .. import conf
from ..queue.prepared import preparing_turned_off

_DJANGO_ONLY = ("context", "cursor_factory", "pool", "server_side_binding", "assume_role", "isolation_level")


def connection_params(alias: str | None = None) -> dict[str, Any]:
    """psycopg.connect() keyword arguments for a database alias (default: the queue's)."""
    db = connections[alias or conf.get("DATABASE")]
    params = dict(db.get_connection_params())
    for key in _DJANGO_ONLY:
        params.pop(key, None)
    # Django's default None becomes psycopg's (prepare hot statements); None set in
    # OPTIONS (a PgBouncer older than 1.21 in transaction mode) turns it off here too.
    if params.get("prepare_threshold") is None and not preparing_turned_off(db):
        params.pop("prepare_threshold", None)
    return params


def connect(*, application_name: str = "supaqueue worker", alias: str | None = None) -> psycopg.Connection:
    """A new autocommit connection in UTC, for the claim loop or (on its own alias) the listener."""
    params = connection_params(alias)
    options = params.pop("options", "")
    conn = psycopg.connect(
        **params,
        autocommit=True,
        application_name=application_name,
        options=f"{options} -c timezone=UTC".strip(),
    )
    return conn

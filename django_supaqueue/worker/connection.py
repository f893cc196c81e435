"""The worker's own database connections, built from Django's settings.

Workers use plain psycopg connections rather than Django's: they need
autocommit, explicit transactions, prepared statements and a blocking
LISTEN, none of which should leak into the ORM connections that task code uses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg
from django.db import connections

from .. import conf
from ..queue.prepared import preparing_turned_off

logger = logging.getLogger("django_supaqueue.worker")

_UTC = ("UTC", "Etc/UTC")

#: Conflicts with a concurrent transaction: the same statements succeed on a new snapshot.
CONFLICTS = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.UniqueViolation,
)
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


def dead_link_limits() -> dict[str, int]:
    """libpq's limits for noticing a dead network within about one LEASE_DURATION.

    Without them a worker cut off from the database waits on the kernel: some
    15 minutes for a statement sent into the void, 130 s per connection attempt,
    and for ever on an idle LISTEN connection whose server has given up on it.
    Its leases are gone after one lease anyway; noticing by then makes it
    reconnect, and claim again, soon after the network is back. A slow server
    trips none of them: its kernel still acknowledges.
    """
    lease = max(2, round(float(conf.get("LEASE_DURATION"))))
    return {
        "connect_timeout": lease,
        "keepalives": 1,
        "keepalives_idle": max(1, lease // 3),
        "keepalives_interval": max(1, lease // 6),
        "keepalives_count": 3,
        "tcp_user_timeout": lease * 1000,
    }


def connect(*, application_name: str = "supaqueue worker", alias: str | None = None) -> psycopg.Connection:
    """A new autocommit connection in UTC, for the claim loop or (on its own alias) the listener.

    UTC is set with SET, not with ``-c timezone=UTC`` in the startup packet:
    PgBouncer before 1.20 refuses a connection whose startup packet carries
    ``options``. TimeZone is one of the parameters PgBouncer tracks, so through
    a transaction pooler it is set again on every server connection lent to
    this client.
    """
    params = {**dead_link_limits(), **connection_params(alias)}  # OPTIONS may set their own
    conn = psycopg.connect(**params, autocommit=True, application_name=application_name)
    if conn.info.parameter_status("TimeZone") not in _UTC:
        conn.execute("SET TIME ZONE 'UTC'")
    return conn


def reconnect_if_dead(
    conn: psycopg.Connection | None,
    exc: psycopg.Error,
    worker_name: str,
    connect: Callable[[], psycopg.Connection],
) -> psycopg.Connection | None:
    """A new connection if ``exc`` left ``conn`` dead; else None, after a pause before the retry.

    A live connection means the statement alone failed (cancelled, a lock or
    statement timeout): its transaction was rolled back and the caller tries
    again on the same connection and under the same registration, since the
    worker has not died and its leases are still its own.
    """
    if conn is None or conn.closed or conn.broken:
        logger.warning("worker %s lost its database connection (%s); reconnecting", worker_name, exc)
        if conn is not None:
            conn.close()
        return connect()
    logger.warning(
        "worker %s: a statement failed (%s: %s); trying again",
        worker_name,
        type(exc).__name__,
        str(exc).strip(),
    )
    time.sleep(0.5)
    return None

"""The Django connections of a job thread: kept open from one attempt to the next.

Django closes a connection at the end of each web request unless CONN_MAX_AGE
says otherwise, and most projects keep its default of 0. Applied to jobs, that
rule opened a new PostgreSQL connection (a server process forked) for every
attempt that touched the ORM: a drain of one-insert jobs ran at a sixth of the
speed it reached with persistent connections. A job thread is long-lived and
runs one attempt at a time, so its connections live as long as the thread
(``SUPAQUEUE["JOB_CONN_MAX_AGE"]``, whatever CONN_MAX_AGE says for requests)
and get Django's end-of-request care between attempts instead: dropped when
the task left a transaction open or autocommit off, or when an error made them
unusable; checked before the next attempt uses them when CONN_HEALTH_CHECKS is
on. The executor closes them when the thread ends.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from django.db import connections

from .. import conf

#: psycopg's (and psycopg2's) TransactionStatus.IDLE: no transaction open on the server.
_IDLE = 0

_tuned = threading.local()  # .raw: alias -> (raw connection, JOB_CONN_MAX_AGE) its close_at was set for


def after_attempt() -> None:
    """Make this thread's Django connections fit for its next attempt, or close them.

    Never raises: an exception here would end the job thread, and with it a slot.
    """
    max_age = conf.get("JOB_CONN_MAX_AGE")
    for conn in connections.all(initialized_only=True):
        if conn.connection is None:
            continue
        try:
            _tidy(conn, max_age)
        except Exception:  # noqa: BLE001  whatever went wrong, a new connection is the cure
            _drop(conn)


def _tidy(conn: Any, max_age: float | None) -> None:
    if conn.in_atomic_block:
        # An atomic block the task never left (an interrupt landed in its
        # exit, or __enter__ was called by hand): Django's own close() would
        # keep it marked "in a transaction" and refuse to reconnect.
        _drop(conn)
        return
    if _server_transaction_open(conn):
        # A BEGIN sent by hand with Django in autocommit: roll it back, as
        # the end of a connection would, rather than let the next job inherit it.
        conn.connection.rollback()
    if max_age != 0 and not getattr(conn, "pool", None):
        _set_close_at(conn, max_age)
    # Django's end-of-request rule, with close_at now the job's: drops a
    # connection left with autocommit off, one that errors made unusable, or
    # one past its age; and marks it for a health check (CONN_HEALTH_CHECKS)
    # before the next attempt's first query. A pooled connection (OPTIONS
    # "pool") keeps Django's close_at of 0: it goes back to the pool.
    conn.close_if_unusable_or_obsolete()


def _server_transaction_open(conn: Any) -> bool:
    info = getattr(conn.connection, "info", None)
    status = getattr(info, "transaction_status", _IDLE)
    return conn.get_autocommit() and status != _IDLE


def _set_close_at(conn: Any, max_age: float | None) -> None:
    """Give a connection the job's deadline, once: counted from when it was opened."""
    raw = getattr(_tuned, "raw", None)
    if raw is None:
        raw = _tuned.raw = {}
    done = raw.get(conn.alias)
    if done is not None and done[0] is conn.connection and done[1] == max_age:
        return
    raw[conn.alias] = (conn.connection, max_age)
    if max_age is None:
        conn.close_at = None
        return
    # connect() set close_at to its own time plus CONN_MAX_AGE: that time is when it opened.
    django_age = conn.settings_dict.get("CONN_MAX_AGE")
    if conn.close_at is not None and django_age is not None:
        opened = conn.close_at - django_age
    else:
        opened = time.monotonic()
    conn.close_at = opened + max_age


def _drop(conn: Any) -> None:
    """Forget a connection whatever state the task left it in; the next query opens a new one.

    Closing it ends whatever transaction it had: the server rolls it back.
    """
    conn.in_atomic_block = False
    conn.closed_in_transaction = False
    conn.needs_rollback = False
    conn.atomic_blocks = []
    conn.savepoint_ids = []
    try:
        conn.close()
    except Exception:  # noqa: BLE001  already broken: forgetting it is all that is left
        conn.connection = None

"""The hot producer statements, bound on the server, on Django's own connection.

Django's psycopg cursors bind parameters on the client: the server parses and
plans every enqueue again (most of a one-row INSERT … SELECT's cost), and
enqueue_many's arrays travel as quoted text literals. This runs a statement
through a server-binding psycopg cursor on the very same connection (so it
stays in the caller's transaction), with its arrays in binary (``%(name)b``)
and, for the single enqueue, prepared once per connection. It still goes
through Django's execute wrappers, error wrapping and query log, so
instrumentation and ``CaptureQueriesContext`` see it.
``SUPAQUEUE["PREPARE_STATEMENTS"] = False``, or ``"prepare_threshold": None``
set explicitly in the database's OPTIONS (for a PgBouncer older than 1.21 in
transaction mode), turns preparing off; binding on the server works there too.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import psycopg
from django.db import connections

from .. import conf

#: A prepare threshold that no statement's execution count reaches.
_NEVER = 2**62


def _prepares(db: Any) -> bool:
    """Prepare unless turned off, or the database's OPTIONS say prepare_threshold=None on purpose."""
    options = db.settings_dict.get("OPTIONS") or {}
    return bool(conf.get("PREPARE_STATEMENTS")) and not (
        "prepare_threshold" in options and options["prepare_threshold"] is None
    )


def _cursor(db: Any, raw: psycopg.Connection) -> psycopg.Cursor:
    """The connection's server-binding cursor, made once: a new cursor starts with empty
    dumper and loader caches, and filling them again cost a sixth of a single enqueue's
    client CPU (95 -> 75 us per statement here)."""
    cursor = getattr(db, "_supaqueue_cursor", None)
    if cursor is None or cursor.connection is not raw or cursor.closed:
        cursor = db._supaqueue_cursor = psycopg.Cursor(raw)
    return cursor


def execute(alias: str, sql: str, params: dict[str, Any], *, binary: bool = False) -> Any:
    """Run ``sql`` on the alias's connection; returns its cursor, to fetch from before the next call.

    ``binary`` asks for results in binary: a long array decodes several times faster.
    """
    db = connections[alias]
    db.ensure_connection()
    db.validate_thread_sharing()
    raw = db.connection
    prepare = _prepares(db)
    if prepare and raw.prepare_threshold is None:
        # None would refuse even an explicit prepare=True; a threshold no count reaches
        # keeps every other statement unprepared, as Django left them.
        raw.prepare_threshold = _NEVER
    cursor = _cursor(db, raw)

    def run(sql: str, params: dict[str, Any], many: bool, context: dict[str, Any]) -> Any:
        db.validate_no_broken_transaction()
        with db.wrap_database_errors:
            return cursor.execute(sql, params, prepare=prepare, binary=binary)

    executor: Any = run
    for wrapper in reversed(db.execute_wrappers):
        executor = functools.partial(wrapper, executor)
    started = time.monotonic()
    try:
        executor(sql, params, False, {"connection": db, "cursor": cursor})
    finally:
        if db.queries_logged:
            db.queries_log.append({"sql": sql, "time": f"{time.monotonic() - started:.3f}"})
    return cursor

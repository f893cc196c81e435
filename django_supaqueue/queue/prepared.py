"""The hot producer statements, bound on the server, on Django's own connection.

Django's psycopg cursors bind parameters on the client: the server parses and
plans every enqueue again (most of a one-row INSERT … SELECT's cost), and
enqueue_many's arrays travel as quoted text literals. ``execute`` runs a
statement through a server-binding psycopg cursor on the very same connection
(so it stays in the caller's transaction), with its arrays in binary
(``%(name)b``). ``fetch_row``, for the single enqueue, goes one layer lower: it
prepares the statement once per connection with libpq and runs it with libpq's
own prepared execution, which costs the client about half of what a psycopg
cursor's execute does.
Both still go through Django's execute wrappers, error wrapping and query log,
so instrumentation and ``CaptureQueriesContext`` see them.
``SUPAQUEUE["PREPARE_STATEMENTS"] = False``, or ``"prepare_threshold": None``
set explicitly in the database's OPTIONS (for a PgBouncer older than 1.21 in
transaction mode), turns preparing off; binding on the server works there too.
"""

from __future__ import annotations

import datetime
import functools
import re
import time
from collections.abc import Callable
from typing import Any

import psycopg
from django.db import connections
from psycopg import errors, pq

from .. import conf
from . import queries

#: A prepare threshold that no statement's execution count reaches.
_NEVER = 2**62


def preparing_turned_off(db: Any) -> bool:
    """The database's OPTIONS say prepare_threshold=None on purpose (Django passes None by default)."""
    options = db.settings_dict.get("OPTIONS") or {}
    return "prepare_threshold" in options and options["prepare_threshold"] is None


def _prepares(db: Any) -> bool:
    """Prepare unless SUPAQUEUE["PREPARE_STATEMENTS"] or the database's OPTIONS turn it off."""
    return bool(conf.get("PREPARE_STATEMENTS")) and not preparing_turned_off(db)


def _cursor(db: Any, raw: psycopg.Connection) -> psycopg.Cursor:
    """The connection's server-binding cursor, made once: a new cursor starts with empty
    dumper and loader caches, and filling them again cost a sixth of a single enqueue's
    client CPU."""
    cursor = getattr(db, "_supaqueue_cursor", None)
    if cursor is None or cursor.connection is not raw or cursor.closed:
        cursor = db._supaqueue_cursor = psycopg.Cursor(raw)
    return cursor


def _through_django(db: Any, sql: str, params: dict[str, Any], run: Callable[[], Any], cursor: Any) -> Any:
    """Run ``run`` as Django runs a cursor's execute: wrappers, error wrapping, query log."""

    def execute(sql: str, params: dict[str, Any], many: bool, context: dict[str, Any]) -> Any:
        db.validate_no_broken_transaction()
        with db.wrap_database_errors:
            return run()

    executor: Any = execute
    for wrapper in reversed(db.execute_wrappers):
        executor = functools.partial(wrapper, executor)
    started = time.monotonic()
    try:
        return executor(sql, params, False, {"connection": db, "cursor": cursor})
    finally:
        if db.queries_logged:
            db.queries_log.append({"sql": sql, "time": f"{time.monotonic() - started:.3f}"})


def _connected(alias: str) -> tuple[Any, psycopg.Connection]:
    db = connections[alias]
    db.ensure_connection()
    db.validate_thread_sharing()
    return db, db.connection


def execute(alias: str, sql: str, params: dict[str, Any], *, binary: bool = False) -> Any:
    """Run ``sql`` on the alias's connection; returns its cursor, to fetch from before the next call.

    ``binary`` asks for results in binary: a long array decodes several times faster.
    """
    db, raw = _connected(alias)
    return _execute(db, raw, sql, params, binary)


def _execute(db: Any, raw: psycopg.Connection, sql: str, params: dict[str, Any], binary: bool) -> Any:
    prepare = _prepares(db)
    if prepare and raw.prepare_threshold is None:
        # None would refuse even an explicit prepare=True; a threshold no count reaches
        # keeps every other statement unprepared, as Django left them.
        raw.prepare_threshold = _NEVER
    cursor = _cursor(db, raw)
    _through_django(
        db, sql, params, lambda: cursor.execute(sql, params, prepare=prepare, binary=binary), cursor
    )
    return cursor


def fetch_row(alias: str, name: str, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
    """The first row of ``sql``, prepared once per connection as ``name`` and run by libpq.

    Only in autocommit, outside any transaction. libpq sends no BEGIN of its own,
    and the statement can vanish: psycopg runs DEALLOCATE ALL after a rollback.
    Outside a transaction the failed call changed nothing, so the statement is
    prepared again and the call retried; inside one the error would have aborted
    it. In a transaction, or with preparing turned off, the cursor path runs the
    statement (psycopg keeps track of the statements it prepares). Either way the
    row comes back in binary: as text, the server formats timestamps and the
    client parses them back.
    """
    db, raw = _connected(alias)
    if not (raw.autocommit and raw.pgconn.transaction_status == pq.TransactionStatus.IDLE and _prepares(db)):
        return _execute(db, raw, sql, params, binary=True).fetchone()
    statements = getattr(db, "_supaqueue_statements", None)
    if statements is None or statements[0] is not raw:
        statements = db._supaqueue_statements = (raw, {})
    statement = statements[1].get(name)
    if statement is None:
        statement = statements[1][name] = _Statement(raw, name, sql)
    return _through_django(db, sql, params, lambda: statement.row(params), _cursor(db, raw))


class _Statement:
    """One statement prepared on one libpq connection, with the loaders of its result columns."""

    def __init__(self, raw: psycopg.Connection, name: str, sql: str) -> None:
        self.raw = raw
        self.name = name.encode()
        self.query, self.names = _numbered(sql)
        self.encoding = raw.info.encoding
        self.prepared = False
        self.loaders: list[Any] | None = None

    def row(self, params: dict[str, Any], *, retry: bool = True) -> tuple[Any, ...] | None:
        values = [_text(params[name], self.encoding) for name in self.names]
        pgconn = self.raw.pgconn
        if not self.prepared:
            self._check(pgconn.prepare(self.name, self.query), pq.ExecStatus.COMMAND_OK)
            self.prepared = True
        result = pgconn.exec_prepared(self.name, values, result_format=pq.Format.BINARY)
        if result.status != pq.ExecStatus.TUPLES_OK and _lost_statement(result):
            # DEALLOCATE ALL ran on this connection (psycopg sends it after a
            # rollback): nothing was written, so prepare again and retry once.
            self.prepared = False
            if retry:
                return self.row(params, retry=False)
        self._check(result, pq.ExecStatus.TUPLES_OK)
        if not result.ntuples:
            return None
        if self.loaders is None:
            adapters = self.raw.adapters
            self.loaders = [
                adapters.get_loader(result.ftype(i), pq.Format.BINARY)(result.ftype(i), self.raw)
                for i in range(result.nfields)
            ]
        return tuple(
            None if (value := result.get_value(0, i)) is None else loader.load(value)
            for i, loader in enumerate(self.loaders)
        )

    def _check(self, result: pq.abc.PGresult, expected: pq.ExecStatus) -> None:
        if result.status == expected:
            return
        if self.raw.pgconn.status == pq.ConnStatus.BAD:
            message = result.get_error_message(self.encoding) or "the connection was lost"
            raise psycopg.OperationalError(f"consuming input failed: {message}")
        raise errors.error_from_result(result, encoding=self.encoding)


def _lost_statement(result: pq.abc.PGresult) -> bool:
    return result.error_field(pq.DiagnosticField.SQLSTATE) == b"26000"


@functools.cache
def _numbered(sql: str) -> tuple[bytes, tuple[str, ...]]:
    """``sql`` with $1..$n for its %(name)s placeholders, and the names in that order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return queries.PLACEHOLDER.sub(number, sql).encode(), tuple(names)


def _text(value: Any, encoding: str) -> bytes | None:
    """A parameter in PostgreSQL's text input format; the server infers its type from the statement."""
    if value is None:
        return None
    if isinstance(value, str):
        if "\x00" in value:  # libpq would cut a text parameter short at a NUL
            raise psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
        return value.encode(encoding)
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, datetime.datetime):
        return value.isoformat().encode()
    if isinstance(value, datetime.timedelta):  # a delayed job's run_in, an interval
        return f"{value.days} days {value.seconds} seconds {value.microseconds} microseconds".encode()
    raise TypeError(f"cannot send {type(value).__name__} as a parameter of a prepared statement")

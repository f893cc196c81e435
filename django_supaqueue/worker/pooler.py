"""Whether a database alias goes through a pooler that lends server connections per transaction.

Such a pooler (PgBouncer, or another, in transaction or statement mode) breaks
what lives in a session: LISTEN, and prepared statements unless it carries them
over (PgBouncer 1.21+ with ``max_prepared_statements``). Its settings cannot be
read from the client, and ``SHOW VERSION`` answers only on PgBouncer's admin
console, so the probe watches what it does instead. Two client connections are
open at once; on a direct connection (or a pooler in session mode) each keeps
its own server process for its whole life, so their ``pg_backend_pid()`` differ
and never change. A transaction pooler hands the idle server connection that
one client has just used to the next one (PgBouncer reuses the most recently
used first), so the second client sees the first one's pid. While the second
one holds that server connection in a transaction, the first one's next
statement must run on another: the statement it prepared before is either
there (carried over) or missing.
"""

from __future__ import annotations

import dataclasses
import uuid

import psycopg
from psycopg import pq, sql

from .connection import connection_params

_PID = "SELECT pg_backend_pid()"


@dataclasses.dataclass(frozen=True)
class Pooling:
    """What the probe saw: ``pooled`` when server connections are shared between clients."""

    pooled: bool
    keeps_prepared: bool = True  # a statement prepared on one server connection runs on the next
    statement_mode: bool = False  # transaction blocks are refused (PgBouncer's statement mode)


def probe(alias: str) -> Pooling:
    """Open two short connections on ``alias`` and watch how they share server processes.

    Raises psycopg.OperationalError when the database cannot be reached.
    """
    params = connection_params(alias)
    with (
        psycopg.connect(**params, autocommit=True) as first,
        psycopg.connect(**params, autocommit=True) as second,
    ):
        # Named at the protocol level, as psycopg and the enqueue prepare theirs (PgBouncer
        # 1.21 carries only those over), under a name no earlier client left on a server.
        name = f"supaqueue_probe_{uuid.uuid4().hex}"
        before = _prepared_pid(first, name, prepare=True)
        try:
            with second.transaction():
                (shared,) = second.execute(_PID).fetchone() or (0,)
                if shared != before:
                    (after,) = first.execute(_PID).fetchone() or (0,)
                    return Pooling(pooled=after != before)
                kept = _prepared_pid(first, name) is not None
                if not kept:  # it stays on the server connection that ``second`` holds
                    second.execute(sql.SQL("DEALLOCATE {}").format(sql.Identifier(name)))
                return Pooling(pooled=True, keeps_prepared=kept)
        except psycopg.errors.ProtocolViolation as exc:  # PgBouncer refuses BEGIN in statement mode
            if "statement pooling" in str(exc):
                return Pooling(pooled=True, keeps_prepared=False, statement_mode=True)
            raise


def _prepared_pid(conn: psycopg.Connection, name: str, *, prepare: bool = False) -> int | None:
    """The server pid, from the statement prepared as ``name``; None when the server has no such statement."""
    pgconn = conn.pgconn
    if prepare:
        _checked(conn, pgconn.prepare(name.encode(), _PID.encode()))
    result = pgconn.exec_prepared(name.encode(), [])
    if result.error_field(pq.DiagnosticField.SQLSTATE) == b"26000":
        return None
    _checked(conn, result)
    return int(result.get_value(0, 0) or 0)


def _checked(conn: psycopg.Connection, result: pq.abc.PGresult) -> None:
    if result.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
        raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)

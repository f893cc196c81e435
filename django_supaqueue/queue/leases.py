"""Workers and their leases: registration, heartbeats, expiry (their statements: leases.sql).

The claim that writes leases is claims.py's; the outcomes that end them, outcomes.py's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from .. import dbclock
from . import queries

SQL = queries.load("leases.sql")


def register_worker(
    conn: Any,
    *,
    name: str,
    host: str,
    pid: int,
    queues: Sequence[str] | None,
    concurrency: int,
    worker_id: int | None = None,
) -> int:
    """Insert this process's Worker row and return its id; ``worker_id``: its row again, under that id."""
    params = {
        "name": name,
        "host": host,
        "pid": pid,
        "queues": json.dumps(list(queues or [])),
        "concurrency": concurrency,
        "worker_id": worker_id,
    }
    if worker_id is not None:
        conn.execute(SQL["register_worker_again"], params)
        return worker_id
    return conn.execute(SQL["register_worker"], params).fetchone()[0]


def unregister_worker(conn: Any, worker_id: int) -> None:
    """Remove the Worker row, unless it still holds leases (then recovery handles them)."""
    conn.execute(SQL["unregister_worker"], {"worker_id": worker_id})


class Beat(NamedTuple):
    """What a heartbeat found: whether the Worker row is there, the leases it renewed, and which of
    those belong to jobs cancelled while they ran."""

    registered: bool
    renewed: set[tuple[int, int]]
    cancelled: frozenset[tuple[int, int]] = frozenset()


def heartbeat(conn: Any, worker_id: int, lease_seconds: float, held: Sequence[tuple[int, int]]) -> Beat:
    """Renew the leases of the attempts this worker is running.

    Only attempts the worker knows it runs are renewed: a lease whose claim
    committed while the connection died was never dispatched, and must expire.
    A held attempt missing from ``renewed`` lost its lease (recovered by
    another worker after the lease ran out): its body should stop, since its
    job may already run elsewhere. Leases are renewed by worker id even when
    the row is gone, so that a worker can register again without a gap.
    """
    alive, job_ids, attempts, db_epoch, cancelled_ids, cancelled_attempts = conn.execute(
        SQL["heartbeat"],
        {
            "worker_id": worker_id,
            "lease": lease_seconds,
            "job_id": [h[0] for h in held],
            "attempt": [h[1] for h in held],
        },
    ).fetchone()
    dbclock.observe(db_epoch, time.monotonic())
    renewed = set(zip(job_ids or [], attempts or [], strict=True))
    cancelled = frozenset(zip(cancelled_ids or [], cancelled_attempts or [], strict=True))
    return Beat(bool(alive), renewed, cancelled)


def expire_leases(conn: Any, *, worker_id: int, held: Sequence[tuple[int, int]], after: float) -> None:
    """Let these leases run out ``after`` seconds from now, into the usual recovery.

    For attempts a worker process leaves behind as it exits (their threads
    would not stop): the exit ends the bodies, and recovery then retries or
    fails the jobs as for any lost worker, counting the attempt.
    """
    if held:
        conn.execute(
            SQL["expire_leases"],
            {
                "job_id": [h[0] for h in held],
                "attempt": [h[1] for h in held],
                "worker_id": worker_id,
                "after": after,
            },
        )


def forget_stale_workers(conn: Any, stale_after: float) -> None:
    """Remove the rows of workers silent for ``stale_after`` seconds that hold no lease."""
    conn.execute(SQL["forget_stale_workers"], {"stale": stale_after})


def note_blocked(
    conn: Any, *, job_id: int, attempt: int, worker_name: str, seconds: float, message: str, stack: str
) -> bool:
    """Add a ``blocked`` event to a running attempt's history; False if it no longer holds its lease."""
    cur = conn.execute(
        SQL["note_blocked"],
        {
            "job_id": job_id,
            "attempt": attempt,
            "worker_name": worker_name,
            "seconds": seconds,
            "message": message,
            "stack": stack,
        },
    )
    return cur.rowcount == 1

"""The claim: how a worker takes runnable jobs and leases them (its statements: claims.sql).

``claim`` is the claim on its own; ``send_claim`` sends the same statements
inside a caller's pipeline (the worker's round trip, outcomes.finish_and_claim)
and reads their rows once the server has answered.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from typing import Any

from .. import conf
from . import queries

SQL = queries.load("claims.sql")


@dataclasses.dataclass(slots=True)
class ClaimedJob:
    """A job a worker holds a lease on; (id, attempt) is its fence."""

    id: int
    queue: str
    task_name: str
    payload: dict[str, Any]
    args: list[Any]
    attempt: int
    max_attempts: int
    timeout: float | None
    # Its end frees room others wait for: a concurrency cap, a serial queue or group, or a rate
    # limit (claims there take only idle slots, so a freed slot may let the window's next start in).
    capped: bool
    execution_mode: str = "threads"
    http: dict[str, Any] | None = None  # an HTTP queue's call: url, method, headers, secret alias, path
    wait: float = 0.0  # seconds from run_at to the claim
    trace_context: dict[str, str] | None = None  # the enqueuer's, for the attempt's span
    serial_group: str | None = None  # its serial group: workers of the group's queues wake when it ends
    received: float = 0.0  # time.monotonic() when the claim came back

    @property
    def on_loop(self) -> bool:
        """Whether it runs on a worker's event loop (an HTTP queue's call, an async queue's task)."""
        return self.http is not None or self.execution_mode == "async"


def claim_params(
    worker_id: int,
    worker_name: str,
    queues: Sequence[str] | None,
    limit: int,
    lease_seconds: float,
    job_ids: Sequence[int] | None = None,
    free: int | None = None,
    locked: bool = True,
    on_loop: bool | None = None,
) -> dict[str, Any]:
    """The parameters of the claim's statements (``free``: idle slots, at most ``limit``).

    ``on_loop``: True claims only the jobs that run on an event loop (HTTP queues' and
    async queues'), False only the others', None both; a worker's async lane and its
    thread lanes each take their own kind.
    """
    return {
        "locked": locked,
        "queues": list(queues) if queues else None,
        "on_loop": on_loop,
        "limit": limit,
        "free": limit if free is None else min(free, limit),
        "worker_id": worker_id,
        "worker_name": worker_name,
        "lease": lease_seconds,
        "rate_margin": float(conf.get("RATE_LIMIT_MARGIN")),
        "job_ids": list(job_ids) if job_ids is not None else None,
    }


class SentClaim:
    """The claim's statements as sent: their cursors, read once the server has answered."""

    __slots__ = ("_serial", "_tenants", "_claim", "_wake")

    def __init__(self, serial: Any, tenants: Any, claim: Any, wake: Any) -> None:
        self._serial = serial
        self._tenants = tenants
        self._claim = claim
        self._wake = wake

    def jobs(self) -> list[ClaimedJob]:
        """The jobs claimed, serial ones first, then those of queues with limits per tenant."""
        rows = self._serial.fetchall() if self._serial is not None else []
        if self._tenants is not None:
            rows += self._tenants.fetchall()
        rows += self._claim.fetchall()
        received = time.monotonic()
        return [ClaimedJob(*r, received=received) for r in rows]

    def next_claim(self) -> tuple[float | None, bool, bool, bool, bool]:
        """rate_wake's answer: (when a rate-limited queue has room again, serial work?, capped queues?,
        queues with limits per tenant?, queues whose jobs run on the event loop?).

        (None, True, True, True, False) when it was not sent: the next claim then sends every statement.
        """
        return self._wake.fetchone() if self._wake is not None else (None, True, True, True, False)


def send_claim(
    conn: Any,
    *,
    worker_id: int,
    worker_name: str,
    queues: Sequence[str] | None,
    limit: int,
    lease_seconds: float,
    job_ids: Sequence[int] | None = None,
    free: int | None = None,
    serial: bool = True,
    lock: bool = True,
    tenants: bool = True,
    wake: bool = False,
    on_loop: bool | None = None,
) -> SentClaim:
    """Send the claim's statements on ``conn``, in the caller's transaction (or pipeline).

    ``lock=False`` leaves out lock_capped_queues and claim_tenants, and capped
    queues get no room; ``tenants=False`` leaves out claim_tenants, and queues
    with limits per tenant get no jobs claimed; ``serial=False`` leaves out
    claim_serial; ``wake`` adds rate_wake, which says whether the next claim
    needs them (see claims.sql); ``on_loop`` is claim_params'.
    """
    params = claim_params(
        worker_id,
        worker_name,
        queues,
        limit,
        lease_seconds,
        job_ids=job_ids,
        free=free,
        locked=lock,
        on_loop=on_loop,
    )
    if lock:
        conn.execute(SQL["lock_capped_queues"], params)
    claimed_serial = conn.execute(SQL["claim_serial"], params) if serial else None
    claimed_tenants = conn.execute(SQL["claim_tenants"], params) if lock and tenants else None
    claimed = conn.execute(SQL["claim"], params)
    woken = None
    if wake:
        served = params["queues"]
        woken = conn.execute(
            rate_wake_statement(tuple(served) if served else None, params["rate_margin"], on_loop)
        )
    return SentClaim(claimed_serial, claimed_tenants, claimed, woken)


def claim(
    conn: Any,
    *,
    worker_id: int,
    worker_name: str,
    queues: Sequence[str] | None,
    limit: int,
    lease_seconds: float,
    job_ids: Sequence[int] | None = None,
    on_loop: bool | None = None,
) -> list[ClaimedJob]:
    """Take up to ``limit`` runnable jobs, highest priority first, and lease them.

    Skips held jobs, paused queues, future run_at and queues at their
    concurrency cap or rate limit; a serial queue or group that is idle gives
    its head only. ``job_ids`` restricts the claim to those jobs. Runs inside
    the caller's transaction, which it needs: the cap's lock, and the count
    of serial jobs taken, last until its end.
    """
    if limit <= 0:
        return []
    sent = send_claim(
        conn,
        worker_id=worker_id,
        worker_name=worker_name,
        queues=queues,
        limit=limit,
        lease_seconds=lease_seconds,
        job_ids=job_ids,
        on_loop=on_loop,
    )
    return sent.jobs()


def loop_work(conn: Any, queues: Sequence[str] | None) -> bool:
    """Whether any of ``queues`` (None: all) is an HTTP or an async queue, not paused: rate_wake's answer."""
    statement = rate_wake_statement(tuple(queues) if queues else None, float(conf.get("RATE_LIMIT_MARGIN")))
    return bool(conn.execute(statement).fetchone()[4])


@functools.lru_cache(maxsize=32)
def rate_wake_statement(
    queues: tuple[str, ...] | None, rate_margin: float, on_loop: bool | None = None
) -> str:
    """rate_wake for one worker, its constants written in: a statement without parameters.

    With the queue names as a parameter, PostgreSQL judged a custom plan (the
    name index, one queue) ten times cheaper than the generic one and planned
    the statement again on every claim of a worker serving named queues. A
    worker's queues never change, so it prepares this text once and its one
    plan is made once.
    """
    values = {
        "queues": list(queues) if queues is not None else None,
        "rate_margin": float(rate_margin),
        "on_loop": on_loop,
    }
    return queries.with_values(SQL["rate_wake"], values)

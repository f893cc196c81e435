"""The worker side, finishing work: success, failure and retry, release, lease recovery."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import psycopg

from .. import conf
from ..constants import CHANNEL
from ..exceptions import ResultNotStorable
from . import claims, leases, queries
from .claims import ClaimedJob
from .storable import SMALLINT_MAX, json_refusal, storable_text

SQL = queries.load("outcomes.sql")
#: complete and fail are planned for each batch, never prepared: given the batch's arrays as
#: values, the planner knows their length and hashes their "= ANY" lookups, where a generic
#: plan guesses ten rows and searches each array linearly. At 300 attempts a batch the
#: generic plan took half as long again (9.5 against 6.4 ms), at 100 a fifth (2.7 against
#: 2.3 ms): more than the planning costs.
_PREPARE = False


@dataclasses.dataclass(slots=True)
class Success:
    job_id: int
    attempt: int
    result: str | None  # JSON text
    duration: float
    http_status: int | None = None


@dataclasses.dataclass(slots=True)
class Failure:
    job_id: int
    attempt: int
    error_class: str
    error_message: str
    traceback: str
    duration: float
    retry_at: datetime | None = None  # None: computed back-off
    backoff: float | None = None  # task-level override of the queue's back-off
    backoff_max: float | None = None
    final: bool = False  # fail for good whatever attempts are left (an HTTP 4xx)
    http_status: int | None = None
    uncounted: bool = False  # nothing was attempted: pending again, the attempt given back


#: The error class of an attempt whose result PostgreSQL cannot store.
RESULT_NOT_STORABLE = f"{ResultNotStorable.__module__}.{ResultNotStorable.__qualname__}"
#: The length of the events' error_class column.
_ERROR_CLASS_LENGTH = 255


def storable(outcome: Success | Failure) -> Success | Failure:
    """The outcome as PostgreSQL can store it, so that no attempt's outcome fails the write of its batch.

    complete(), fail() and finish_and_claim() apply it to every outcome they
    write; a caller that reports outcomes (signals, a response) applies it
    first, to report what is written. A result jsonb would refuse (see
    storable.json_refusal) makes the attempt a failure for good,
    ResultNotStorable (its docstring says why for good). NUL and lone
    surrogates in error texts are written as escapes, an error class is cut
    to its column, an http_status that fits no smallint is left out, and a
    back-off that is no number of seconds gives way to the queue's.
    """
    http_status = outcome.http_status
    if http_status is not None and not 0 <= http_status <= SMALLINT_MAX:
        http_status = None
    if isinstance(outcome, Success):
        why = None if outcome.result is None else json_refusal(outcome.result)
        if why is not None:
            return Failure(
                job_id=outcome.job_id,
                attempt=outcome.attempt,
                error_class=RESULT_NOT_STORABLE,
                error_message=f"the attempt's result cannot be stored: {why}",
                traceback="",
                duration=outcome.duration,
                final=True,
                http_status=http_status,
            )
        if http_status != outcome.http_status:
            return dataclasses.replace(outcome, http_status=None)
        return outcome
    fields = {
        "error_class": storable_text(outcome.error_class)[:_ERROR_CLASS_LENGTH],
        "error_message": storable_text(outcome.error_message),
        "traceback": storable_text(outcome.traceback),
        "http_status": http_status,
        "backoff": _seconds_or_none(outcome.backoff),
        "backoff_max": _seconds_or_none(outcome.backoff_max),
    }
    if all(getattr(outcome, name) == value for name, value in fields.items()):
        return outcome
    return dataclasses.replace(outcome, **fields)


def _seconds_or_none(seconds: float | None) -> float | None:
    return seconds if seconds is not None and math.isfinite(seconds) else None


def _split_unstorable(successes: Sequence[Success]) -> tuple[list[Success], list[Failure]]:
    """The successes PostgreSQL can store as they are, and the failures the others become."""
    kept: list[Success] = []
    failed: list[Failure] = []
    for success in successes:
        outcome = storable(success)
        (kept if isinstance(outcome, Success) else failed).append(outcome)
    return kept, failed


@dataclasses.dataclass(slots=True)
class Retry:
    """What became of a failed attempt: pending again at run_at, or failed for good."""

    job_id: int
    status: str
    run_at: datetime


def release(
    conn: Any,
    *,
    worker_id: int,
    worker_name: str,
    held: Sequence[tuple[int, int]],
    delay: float = 0.0,
    message: str = "the worker stopped before the attempt finished",
) -> list[int]:
    """Give back attempts a stopping worker will not finish: pending again, the attempt not counted.

    The job keeps its run_at, so it keeps its place in line (a serial queue
    runs it next). ``delay`` > 0 makes it runnable only that many seconds
    from now instead: for an attempt whose thread had not stopped when its
    process exits, so that the exit surely ends the body before the job can
    start elsewhere.
    """
    if not held:
        return []
    params = {
        "job_id": [h[0] for h in held],
        "attempt": [h[1] for h in held],
        "worker_id": worker_id,
        "worker_name": worker_name,
        "delay": delay,
        "message": message,
    }
    return [r[0] for r in conn.execute(SQL["release"], params).fetchall()]


def notify_queues(conn: Any, names: Iterable[str]) -> None:
    """Wake every listening worker of these queues (a capped queue that has room again)."""
    names = sorted(set(names))
    if names:
        conn.execute(SQL["notify_queues"], {"names": names, "channel": CHANNEL})


def _complete_params(worker_id: int, worker_name: str, successes: Sequence[Success]) -> dict[str, Any]:
    return {
        "job_id": [s.job_id for s in successes],
        "attempt": [s.attempt for s in successes],
        "result": [s.result for s in successes],
        "duration": [s.duration for s in successes],
        "http_status": [s.http_status for s in successes],
        "worker_id": worker_id,
        "worker_name": worker_name,
    }


def _fail_params(worker_id: int, worker_name: str, failures: Sequence[Failure]) -> dict[str, Any]:
    failures = [storable(f) for f in failures]
    return {
        "job_id": [f.job_id for f in failures],
        "attempt": [f.attempt for f in failures],
        "error_class": [f.error_class for f in failures],
        "error_message": [f.error_message for f in failures],
        "traceback": [f.traceback for f in failures],
        "duration": [f.duration for f in failures],
        "retry_at": [f.retry_at for f in failures],
        "backoff": [f.backoff for f in failures],
        "backoff_max": [f.backoff_max for f in failures],
        "final": [f.final for f in failures],
        "uncounted": [f.uncounted for f in failures],
        "http_status": [f.http_status for f in failures],
        "worker_id": worker_id,
        "worker_name": worker_name,
        **_backoff_defaults(),
    }


def complete(conn: Any, *, worker_id: int, worker_name: str, successes: Sequence[Success]) -> set[int]:
    """Record successful attempts; returns the ids whose lease still matched (the others were fenced).

    A success whose result PostgreSQL cannot store is recorded as the failure
    it becomes (see storable), and its id is not returned.
    """
    successes, unstorable = _split_unstorable(successes)
    fail(conn, worker_id=worker_id, worker_name=worker_name, failures=unstorable)
    if not successes:
        return set()
    params = _complete_params(worker_id, worker_name, successes)
    rows = conn.execute(SQL["complete"], params, prepare=_PREPARE).fetchall()
    return {r[0] for r in rows}


def _backoff_defaults() -> dict[str, float]:
    return {
        "default_backoff": float(conf.get("RETRY_BACKOFF")),
        "default_backoff_max": float(conf.get("RETRY_BACKOFF_MAX")),
    }


def fail(conn: Any, *, worker_id: int, worker_name: str, failures: Sequence[Failure]) -> list[Retry]:
    """Record failed attempts: back to pending after a back-off, or failed for good."""
    if not failures:
        return []
    params = _fail_params(worker_id, worker_name, failures)
    rows = conn.execute(SQL["fail"], params, prepare=_PREPARE).fetchall()
    return [Retry(*r) for r in rows]


@contextlib.contextmanager
def _one_round_trip(conn: Any) -> Iterator[None]:
    """A pipeline whose statements commit or roll back together, in one round trip.

    On an autocommit connection the server runs everything up to a pipeline's
    Sync as one transaction, committed at the Sync (an error rolls it all
    back), so no BEGIN or COMMIT is sent. psycopg's transaction() inside a
    pipeline would add a Sync after BEGIN and one after COMMIT: three round
    trips instead of one, a third of an idle worker's pick-up time. Elsewhere
    (a caller's open transaction, or no autocommit) transaction() keeps its
    usual meaning.
    """
    if conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        try:
            with conn.pipeline():
                yield
        except psycopg.Error:
            # The server skipped what followed the error, including the preparation
            # of statements psycopg now takes for prepared ("prepared statement
            # _pg3_0 does not exist" on every later round trip). A transaction
            # rolled back empties psycopg's cache and the server's alike.
            if not (conn.closed or conn.broken):
                with conn.transaction(force_rollback=True):
                    pass
            raise
    else:
        with conn.pipeline(), conn.transaction():
            yield


class Round(NamedTuple):
    """What one round trip of the claim loop brings back (see finish_and_claim)."""

    retries: list[Retry]
    jobs: list[ClaimedJob]
    rate_wake: float | None  # when a rate-limited queue with due jobs has room again (epoch seconds)
    serial_work: bool  # the next claim needs serial=True
    capped: bool  # the next claim needs lock=True
    tenants: bool  # the next claim needs tenants=True
    completed: frozenset[int] = frozenset()  # the successes written (the others were fenced out)
    loop_work: bool = False  # a served queue's jobs run on the event loop (an HTTP or an async queue)


def finish_and_claim(
    conn: Any,
    *,
    worker_id: int,
    worker_name: str,
    successes: Sequence[Success],
    failures: Sequence[Failure],
    freed_queues: Iterable[str],
    queues: Sequence[str] | None,
    limit: int,
    lease_seconds: float,
    free: int | None = None,
    freed_groups: Iterable[str] = (),
    serial: bool = True,
    lock: bool = True,
    tenants: bool = True,
    job_ids: Sequence[int] | None = None,
    on_loop: bool | None = None,
) -> Round:
    """The worker's round trip: record finished attempts, wake capped queues, claim new jobs.

    One transaction, sent as one pipeline: the statements of complete(),
    fail(), notify_queues() and claim() go to the server together, so a cycle
    of the claim loop costs one network round trip and one commit (see
    _one_round_trip). Serial groups whose job ended wake the workers of every
    queue holding their next jobs (a group spans queues). The Round says
    whether the next call needs ``serial``, ``lock`` and ``tenants`` (all True
    when nothing was claimed, to be safe). ``serial``, ``lock``, ``tenants``,
    ``free``, ``job_ids`` and ``on_loop`` are claims.send_claim's. A success whose result PostgreSQL
    cannot store is written with the failures (see storable).
    """
    successes, unstorable = _split_unstorable(successes)
    failures = [*failures, *unstorable]
    failed = claimed = completed = None
    freed = sorted(set(freed_queues))
    groups = sorted(set(freed_groups))
    with _one_round_trip(conn):
        if successes:
            params = _complete_params(worker_id, worker_name, successes)
            completed = conn.execute(SQL["complete"], params, prepare=_PREPARE)
        if failures:
            params = _fail_params(worker_id, worker_name, failures)
            failed = conn.execute(SQL["fail"], params, prepare=_PREPARE)
        if freed:
            conn.execute(SQL["notify_queues"], {"names": freed, "channel": CHANNEL})
        if groups:
            conn.execute(SQL["notify_groups"], {"groups": groups, "channel": CHANNEL})
        if limit > 0:
            claimed = claims.send_claim(
                conn,
                worker_id=worker_id,
                worker_name=worker_name,
                queues=queues,
                limit=limit,
                lease_seconds=lease_seconds,
                job_ids=job_ids,
                free=free,
                serial=serial,
                lock=lock,
                tenants=tenants,
                wake=True,
                on_loop=on_loop,
            )
    retries = [Retry(*r) for r in failed.fetchall()] if failed is not None else []
    written = frozenset(r[0] for r in completed.fetchall()) if completed is not None else frozenset()
    if claimed is None:
        return Round(retries, [], None, True, True, True, written)
    wake, serial, capped, tenants, loop_work = claimed.next_claim()
    return Round(retries, claimed.jobs(), wake, serial, capped, tenants, written, loop_work)


def recover_expired(conn: Any, *, limit: int = 100, stale_after: float | None = None) -> list[Retry]:
    """Treat attempts whose lease ran out as lost: retry them or fail them for good.

    Any worker may run this; SKIP LOCKED keeps two recoverers from fighting
    over the same lease. Worker rows silent for ``stale_after`` seconds and
    holding nothing are removed.
    """
    rows = conn.execute(SQL["recover_expired"], {"limit": limit, **_backoff_defaults()}).fetchall()
    if stale_after is not None:
        leases.forget_stale_workers(conn, stale_after)
    return [Retry(*r) for r in rows]


def retry_delay_bounds(attempt: int, base: float, cap: float) -> tuple[float, float]:
    """The [low, high] seconds a retry after ``attempt`` waits (for docs and tests)."""
    delay = min(cap, base * math.pow(2, min(attempt - 1, 60)))
    return delay / 2, delay

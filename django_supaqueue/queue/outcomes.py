"""The worker side, finishing work: success, failure and retry, release, lease recovery."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import psycopg

from .. import conf
from ..exceptions import ResultNotStorable
from .leases import (
    _CLAIM,
    _CLAIM_SERIAL,
    _DELETE_STALE_WORKERS,
    _LOCK_CAPPED_QUEUES,
    ClaimedJob,
    _claim_params,
    rate_wake_statement,
)
from .storable import SMALLINT_MAX, json_refusal, storable_text
from .tables import CHANNEL, CURRENT, EVENT, IN_PROGRESS, JOB, PENDING, QUEUE, STOPPED, WAITING, WORKER


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


# A job going back to pending keeps its key unless a newer job that has not
# started holds it (enqueued with that key while this one ran): the key stays
# with the newer job, as in graphile-worker, and the unique index is never violated.
_KEY_UNLESS_TAKEN = f"""CASE WHEN j.key IS NOT NULL AND EXISTS (
            SELECT 1 FROM {JOB} p
            WHERE p.key = j.key AND p.status IN ('{WAITING}', '{PENDING}') AND p.id <> j.id)
          THEN NULL ELSE j.key END"""


def _settle(cte: str, outcome: str, where: str) -> str:
    """SQL that hands the dependents of the finished jobs in ``cte`` to the database.

    supaqueue_settle_dependents() (migration 0009 says why it is a function)
    counts each dependent down, makes it pending, or cancels it. It is called
    only when one of the finished jobs has dependents, so jobs without any pay
    for one boolean column.
    """
    return (
        f"SELECT supaqueue_settle_dependents(array_agg(id), array_agg({outcome}::text)) "
        f"FROM {cte} WHERE {where} HAVING count(*) > 0"
    )


_COMPLETE = f"""
WITH d AS (
  SELECT * FROM unnest(%(job_id)s::bigint[], %(attempt)s::int[], %(result)s::text[],
                       %(duration)s::float8[], %(http_status)s::int[])
    AS d(job_id, attempt, result, duration, http_status)
), lease AS (
  DELETE FROM {CURRENT} c USING d
  WHERE c.job_id = d.job_id AND c.attempt = d.attempt AND c.worker_id = %(worker_id)s
  RETURNING d.job_id, d.attempt, d.result, d.duration, d.http_status
), done AS (
  UPDATE {JOB} j SET status = 'successful', result = lease.result::jsonb, finished_at = now(),
                     last_error = ''
  FROM lease WHERE j.id = lease.job_id AND j.status = '{IN_PROGRESS}'
  RETURNING j.id, j.has_dependents
), settled AS (
  {_settle("done", "'successful'", "has_dependents")}
), event AS (
  INSERT INTO {EVENT} (job_id, kind, attempt, worker_name, at, duration, error_class,
                       error_message, traceback, http_status)
  SELECT lease.job_id, CASE WHEN done.id IS NULL THEN '{STOPPED}' ELSE 'succeeded' END, lease.attempt,
         %(worker_name)s, now(), lease.duration, '', '', '', lease.http_status
  FROM lease LEFT JOIN done ON done.id = lease.job_id
)
SELECT id FROM done, (SELECT count(*) FROM settled) s
"""

# The shared tail of fail() and recover_expired(): given a CTE ``lease`` of
# attempts whose leases were just removed, decide retry or final failure,
# compute the back-off in the database (so it always uses the queue's current
# settings), and write one event per attempt. A job going back to pending
# gives up its key when a newer pending job already holds it (enqueued with
# that key while this one ran): the key stays with the newer job, as in
# graphile-worker, and the unique index of pending keys is never violated.
_RESOLVE_FAILURES = f"""
, upd AS (
  UPDATE {JOB} j SET
    status = CASE WHEN l.uncounted OR (j.attempts < j.max_attempts AND NOT l.final) THEN '{PENDING}'
             ELSE 'failed' END,
    run_at = CASE WHEN l.uncounted OR (j.attempts < j.max_attempts AND NOT l.final)
             THEN COALESCE(l.retry_at, now() + make_interval(
               secs => LEAST(COALESCE(l.backoff_max, q.retry_backoff_max, %(default_backoff_max)s),
                             COALESCE(l.backoff, q.retry_backoff, %(default_backoff)s)
                               * power(2, LEAST(j.attempts - 1, 60)))
                       * (0.5 + random() * 0.5)))
             ELSE j.run_at END,
    finished_at = CASE WHEN l.uncounted OR (j.attempts < j.max_attempts AND NOT l.final) THEN NULL
                  ELSE now() END,
    attempts = j.attempts - CASE WHEN l.uncounted THEN 1 ELSE 0 END,
    key = {_KEY_UNLESS_TAKEN},
    last_error = l.error_class || ': ' || l.error_message
  FROM lease l, {QUEUE} q
  WHERE j.id = l.job_id AND q.id = j.queue_id AND j.status = '{IN_PROGRESS}'
  RETURNING j.id, j.status, j.run_at, l.attempt, l.worker_name, l.duration, l.error_class,
            l.error_message, l.traceback, l.http_status, j.has_dependents
), stopped AS (
  INSERT INTO {EVENT} (job_id, kind, attempt, worker_name, at, duration, error_class,
                       error_message, traceback)
  SELECT l.job_id, '{STOPPED}', l.attempt, l.worker_name, now(), l.duration, l.error_class,
         l.error_message, l.traceback
  FROM lease l WHERE l.job_id NOT IN (SELECT id FROM upd)
), settled AS (
  {_settle("upd", "status", "has_dependents AND status = 'failed'")}
), event AS (
  INSERT INTO {EVENT} (job_id, kind, attempt, worker_name, at, duration, error_class,
                       error_message, traceback, retry_at, http_status)
  SELECT id, CASE WHEN status = '{PENDING}' THEN 'retried' ELSE 'failed' END, attempt,
         worker_name, now(), duration, error_class, error_message, traceback,
         CASE WHEN status = '{PENDING}' THEN run_at END, http_status
  FROM upd
)
SELECT id, status, run_at FROM upd, (SELECT count(*) FROM settled) s
"""

_FAIL = (
    f"""
WITH d AS (
  SELECT * FROM unnest(%(job_id)s::bigint[], %(attempt)s::int[], %(error_class)s::text[],
                       %(error_message)s::text[], %(traceback)s::text[], %(duration)s::float8[],
                       %(retry_at)s::timestamptz[], %(backoff)s::float8[], %(backoff_max)s::float8[],
                       %(final)s::bool[], %(http_status)s::int[], %(uncounted)s::bool[])
    AS d(job_id, attempt, error_class, error_message, traceback, duration, retry_at, backoff,
         backoff_max, final, http_status, uncounted)
), lease AS (
  DELETE FROM {CURRENT} c USING d
  WHERE c.job_id = d.job_id AND c.attempt = d.attempt AND c.worker_id = %(worker_id)s
  RETURNING d.*, %(worker_name)s::text AS worker_name
)"""
    + _RESOLVE_FAILURES
)

_RECOVER_EXPIRED = (
    f"""
WITH expired AS (
  SELECT c.id, w.name, w.last_heartbeat_at
  FROM {CURRENT} c LEFT JOIN {WORKER} w ON w.id = c.worker_id
  WHERE c.lease_expires_at < now()
  ORDER BY c.id LIMIT %(limit)s FOR UPDATE OF c SKIP LOCKED
), lease AS (
  DELETE FROM {CURRENT} c USING expired e
  WHERE c.id = e.id
  RETURNING c.job_id, c.attempt, 'WorkerLost'::text AS error_class,
    'worker ' || COALESCE(e.name, '#' || c.worker_id) || ' stopped renewing its lease ('
      || COALESCE('last heartbeat ' || to_char(e.last_heartbeat_at AT TIME ZONE 'UTC',
                                               'YYYY-MM-DD HH24:MI:SS') || ' UTC',
                  'its registration is gone') || ')'
      AS error_message,
    ''::text AS traceback, extract(epoch FROM now() - c.started_at)::float8 AS duration,
    NULL::timestamptz AS retry_at, NULL::float8 AS backoff, NULL::float8 AS backoff_max,
    false AS final, NULL::int AS http_status, false AS uncounted,
    COALESCE(e.name, '#' || c.worker_id) AS worker_name
)"""
    + _RESOLVE_FAILURES
)

_RELEASE = f"""
WITH d AS (
  SELECT * FROM unnest(%(job_id)s::bigint[], %(attempt)s::int[]) AS d(job_id, attempt)
), lease AS (
  DELETE FROM {CURRENT} c USING d
  WHERE c.job_id = d.job_id AND c.attempt = d.attempt AND c.worker_id = %(worker_id)s
  RETURNING c.job_id, c.attempt, c.started_at
), upd AS (
  UPDATE {JOB} j SET status = '{PENDING}',
    run_at = CASE WHEN %(delay)s > 0 THEN now() + %(delay)s * interval '1 second'
             ELSE LEAST(j.run_at, now()) END,
    attempts = GREATEST(j.attempts - 1, 0),
    key = {_KEY_UNLESS_TAKEN}
  FROM lease WHERE j.id = lease.job_id AND j.status = '{IN_PROGRESS}'
  RETURNING j.id
), event AS (
  INSERT INTO {EVENT} (job_id, kind, attempt, worker_name, at, duration, error_class, error_message,
                       traceback)
  SELECT job_id, 'released', attempt, %(worker_name)s, now(),
         extract(epoch FROM now() - started_at)::float8, '', %(message)s, ''
  FROM lease
)
SELECT id FROM upd
"""


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
    return [r[0] for r in conn.execute(_RELEASE, params).fetchall()]


_NOTIFY_QUEUES = f"""
SELECT pg_notify('{CHANNEL}', name || ' 0') FROM unnest(%(names)s::text[]) AS name
"""

_NOTIFY_GROUPS = f"""
SELECT pg_notify('{CHANNEL}', q.name || ' 0') FROM {QUEUE} q
WHERE NOT q.paused AND q.id IN (
  SELECT j.queue_id FROM {JOB} j
  WHERE j.serial_group = ANY(%(groups)s::text[]) AND j.status = '{PENDING}' AND j.enabled)
"""


def notify_queues(conn: Any, names: Iterable[str]) -> None:
    """Wake every listening worker of these queues (a capped queue that has room again)."""
    names = sorted(set(names))
    if names:
        conn.execute(_NOTIFY_QUEUES, {"names": names})


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
    rows = conn.execute(_COMPLETE, _complete_params(worker_id, worker_name, successes)).fetchall()
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
    rows = conn.execute(_FAIL, _fail_params(worker_id, worker_name, failures)).fetchall()
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
) -> Round:
    """The worker's round trip: record finished attempts, wake capped queues, claim new jobs.

    One transaction, sent as one pipeline: the statements of complete(),
    fail(), notify_queues() and claim() go to the server together, so a cycle
    of the claim loop costs one network round trip and one commit (see
    _one_round_trip). Serial groups whose job ended wake the workers of every
    queue holding their next jobs (a group spans queues). The Round says
    whether the next call needs ``serial`` and ``lock`` (both True when
    nothing was claimed, to be safe). ``serial=False`` leaves out the claim of
    serial queues and groups; ``lock=False`` the lock of capped queues, which
    this claim then skips (see _LOCK_CAPPED_QUEUES). ``free`` is how many of
    ``limit`` are idle slots (see _CLAIM_ROOM). A success whose result
    PostgreSQL cannot store is written with the failures (see storable).
    """
    successes, unstorable = _split_unstorable(successes)
    failures = [*failures, *unstorable]
    failed = claimed = claimed_serial = wake = None
    freed = sorted(set(freed_queues))
    groups = sorted(set(freed_groups))
    with _one_round_trip(conn):
        if successes:
            conn.execute(_COMPLETE, _complete_params(worker_id, worker_name, successes))
        if failures:
            failed = conn.execute(_FAIL, _fail_params(worker_id, worker_name, failures))
        if freed:
            conn.execute(_NOTIFY_QUEUES, {"names": freed})
        if groups:
            conn.execute(_NOTIFY_GROUPS, {"groups": groups})
        if limit > 0:
            params = _claim_params(
                worker_id, worker_name, queues, limit, lease_seconds, free=free, locked=lock
            )
            if lock:
                conn.execute(_LOCK_CAPPED_QUEUES, params)
            if serial:
                claimed_serial = conn.execute(_CLAIM_SERIAL, params)
            claimed = conn.execute(_CLAIM, params)
            served = params["queues"]
            wake = conn.execute(rate_wake_statement(tuple(served) if served else None, params["rate_margin"]))
    retries = [Retry(*r) for r in failed.fetchall()] if failed is not None else []
    rows = claimed_serial.fetchall() if claimed_serial is not None else []
    rows += claimed.fetchall() if claimed is not None else []
    received = time.monotonic()
    jobs = [ClaimedJob(*r, received=received) for r in rows]
    rate_wake, serial_work, capped = wake.fetchone() if wake is not None else (None, True, True)
    return Round(retries, jobs, rate_wake, serial_work, capped)


def recover_expired(conn: Any, *, limit: int = 100, stale_after: float | None = None) -> list[Retry]:
    """Treat attempts whose lease ran out as lost: retry them or fail them for good.

    Any worker may run this; SKIP LOCKED keeps two recoverers from fighting
    over the same lease. Worker rows silent for ``stale_after`` seconds and
    holding nothing are removed.
    """
    rows = conn.execute(_RECOVER_EXPIRED, {"limit": limit, **_backoff_defaults()}).fetchall()
    if stale_after is not None:
        conn.execute(_DELETE_STALE_WORKERS, {"stale": stale_after})
    return [Retry(*r) for r in rows]


def retry_delay_bounds(attempt: int, base: float, cap: float) -> tuple[float, float]:
    """The [low, high] seconds a retry after ``attempt`` waits (for docs and tests)."""
    delay = min(cap, base * math.pow(2, min(attempt - 1, 60)))
    return delay / 2, delay

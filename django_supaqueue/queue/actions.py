"""Operator actions and maintenance: cancel, retry, run now, hold, delete, pause, prune."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import connections, transaction

from ..models import Job
from .outcomes import _KEY_UNLESS_TAKEN, _settle, notify_queues
from .tables import (
    CANCEL_CHANNEL,
    CANCELLED,
    CURRENT,
    DEPENDENCY,
    EVENT,
    FAILED,
    IN_PROGRESS,
    JOB,
    PENDING,
    QUEUE,
    WAITING,
    _db_alias,
)

_CANCEL = f"""
WITH target AS (
  SELECT id FROM {JOB}
  WHERE id = ANY(%(job_id)s::bigint[]) AND status IN ('{WAITING}', '{PENDING}', '{IN_PROGRESS}')
  ORDER BY id FOR UPDATE
), lease AS (
  SELECT c.job_id, c.attempt FROM {CURRENT} c JOIN target ON c.job_id = target.id
), upd AS (
  UPDATE {JOB} j SET status = 'cancelled', finished_at = now()
  FROM target WHERE j.id = target.id
  RETURNING j.id, j.attempts, j.has_dependents
), settled AS (
  {_settle("upd", "'cancelled'", "has_dependents")}
), event AS (
  INSERT INTO {EVENT} (job_id, kind, attempt, worker_name, at, error_class, error_message, traceback)
  SELECT id, 'cancelled', NULLIF(attempts, 0), '', now(), '', %(reason)s, '' FROM upd
)
SELECT upd.id, lease.attempt
FROM upd LEFT JOIN lease ON lease.job_id = upd.id, (SELECT count(*) FROM settled) s
"""

_NOTIFY_CANCELLED = f"""
SELECT pg_notify('{CANCEL_CHANNEL}', a.job_id || ' ' || a.attempt)
FROM unnest(%(job_id)s::bigint[], %(attempt)s::int[]) AS a(job_id, attempt)
"""


def cancel(jobs: Iterable[Job | int], reason: str = "") -> list[int]:
    """Cancel pending or running jobs; returns the ids that were cancelled.

    A pending job will never run. A running attempt's worker is told to stop
    it, the way a timeout stops it; its result can never be written (the job
    is no longer in progress), but it keeps its lease until its body has
    really stopped, so that its serial queue or group stays taken until then.
    Finished jobs are left alone.
    """
    ids = [j.pk if isinstance(j, Job) else int(j) for j in jobs]
    if not ids:
        return []
    alias = _db_alias()
    with transaction.atomic(using=alias), connections[alias].cursor() as cur:
        cur.execute(_CANCEL, {"job_id": ids, "reason": reason})
        rows = cur.fetchall()
        running = [(job_id, attempt) for job_id, attempt in rows if attempt is not None]
        if running:
            cur.execute(
                _NOTIFY_CANCELLED,
                {"job_id": [r[0] for r in running], "attempt": [r[1] for r in running]},
            )
    return [r[0] for r in rows]


_PRUNE = f"""
WITH doomed AS (
  SELECT id FROM {JOB}
  WHERE finished_at IS NOT NULL AND finished_at < now() - make_interval(secs => %(oldest)s)
    AND ((status = 'successful' AND finished_at < now() - make_interval(secs => %(successful)s))
      OR (status = 'failed' AND finished_at < now() - make_interval(secs => %(failed)s))
      OR (status = 'cancelled' AND finished_at < now() - make_interval(secs => %(cancelled)s)))
  ORDER BY finished_at LIMIT %(batch)s FOR UPDATE SKIP LOCKED
), events AS (
  DELETE FROM {EVENT} e USING doomed WHERE e.job_id = doomed.id
), edges AS (
  DELETE FROM {DEPENDENCY} e USING doomed WHERE e.job_id = doomed.id OR e.depends_on_id = doomed.id
)
DELETE FROM {JOB} j USING doomed WHERE j.id = doomed.id
"""


def prune(
    conn: Any,
    *,
    successful_hours: float | None,
    failed_hours: float | None,
    cancelled_hours: float | None,
    batch: int = 1000,
) -> int:
    """Delete one batch of finished jobs older than their retention (None: keep); returns how many.

    Oldest first, through the partial index on finished_at, so a pass costs
    the same whatever the table's size. Their events go in the same statement.
    """
    ages = {"successful": successful_hours, "failed": failed_hours, "cancelled": cancelled_hours}
    kept = [h for h in ages.values() if h is not None]
    if not kept:
        return 0
    # A NULL interval makes its comparison NULL, so a status kept forever never matches.
    params = {k: h * 3600.0 if h is not None else None for k, h in ages.items()}
    params.update(oldest=min(kept) * 3600.0, batch=batch)
    with conn.cursor() as cur:
        cur.execute(_PRUNE, params)
        return cur.rowcount


_RETRY_FAILED = f"""
WITH target AS (
  SELECT j.id FROM {JOB} j JOIN {QUEUE} q ON q.id = j.queue_id
  WHERE q.name = %(queue)s AND j.status = 'failed'
  ORDER BY j.finished_at, j.id LIMIT %(limit)s FOR UPDATE OF j SKIP LOCKED
), upd AS (
  UPDATE {JOB} j SET status = '{PENDING}', max_attempts = GREATEST(j.max_attempts, j.attempts + 1),
    run_at = now(), finished_at = NULL,
    key = {_KEY_UNLESS_TAKEN}
  FROM target WHERE j.id = target.id
  RETURNING j.id, j.attempts
), event AS (
  INSERT INTO {EVENT} (job_id, kind, attempt, worker_name, at, error_class, error_message, traceback)
  SELECT id, 'manual_retry', attempts, %(worker_name)s, now(), '', %(reason)s, '' FROM upd
)
SELECT id FROM upd ORDER BY id
"""


def retry_failed(conn: Any, *, queue: str, limit: int, worker_name: str, reason: str = "") -> list[int]:
    """Give up to ``limit`` jobs of ``queue`` that failed for good one more attempt each (pending now).

    Runs inside the caller's transaction; each gets a "manual_retry" event.
    """
    if limit <= 0:
        return []
    params = {"queue": queue, "limit": limit, "worker_name": worker_name, "reason": reason}
    return [r[0] for r in conn.execute(_RETRY_FAILED, params).fetchall()]


# The shared tail of the operators' job statements: given a CTE ``upd`` of
# changed jobs (id, queue_id, attempts), write one event of %(kind)s each and
# return the jobs' queues, so the caller can wake the workers that serve them.
_OPERATOR_TAIL = f"""
, event AS (
  INSERT INTO {EVENT} (job_id, kind, attempt, worker_name, at, error_class, error_message, traceback)
  SELECT id, %(kind)s, NULLIF(attempts, 0), '', now(), '', %(reason)s, '' FROM upd
)
SELECT upd.id, q.name FROM upd JOIN {QUEUE} q ON q.id = upd.queue_id
"""

_RETRY_NOW = (
    f"""
WITH target AS (
  SELECT id FROM {JOB}
  WHERE id = ANY(%(job_id)s::bigint[])
    AND (status IN ('{FAILED}', '{CANCELLED}')
         OR (status = '{PENDING}' AND attempts > 0 AND run_at > now()))
    AND NOT EXISTS (SELECT 1 FROM {CURRENT} c WHERE c.job_id = {JOB}.id)  -- a cancelled body still stopping
  ORDER BY id FOR UPDATE
), ranked AS (
  SELECT j.id, row_number() OVER (
           PARTITION BY j.key ORDER BY (j.status = '{PENDING}') DESC, j.id DESC) AS rn
  FROM {JOB} j JOIN target t ON t.id = j.id
), upd AS (
  UPDATE {JOB} j SET status = '{PENDING}', run_at = now(), enabled = true, finished_at = NULL,
    max_attempts = GREATEST(j.max_attempts, j.attempts + 1),
    key = CASE WHEN j.key IS NULL THEN NULL
               WHEN r.rn > 1 OR EXISTS (SELECT 1 FROM {JOB} p
                                        WHERE p.key = j.key AND p.status IN ('{WAITING}', '{PENDING}')
                                          AND p.id <> j.id)
               THEN NULL ELSE j.key END
  FROM ranked r WHERE j.id = r.id
  RETURNING j.id, j.queue_id, j.attempts
)"""
    + _OPERATOR_TAIL
)

_RUN_NOW = (
    f"""
WITH upd AS (
  UPDATE {JOB} j SET run_at = now()
  WHERE j.id = ANY(%(job_id)s::bigint[]) AND j.status = '{PENDING}' AND j.run_at > now()
  RETURNING j.id, j.queue_id, j.attempts
)"""
    + _OPERATOR_TAIL
)

_SET_ENABLED = (
    f"""
WITH upd AS (
  UPDATE {JOB} j SET enabled = %(enabled)s
  WHERE j.id = ANY(%(job_id)s::bigint[]) AND j.status = '{PENDING}' AND j.enabled <> %(enabled)s
  RETURNING j.id, j.queue_id, j.attempts
)"""
    + _OPERATOR_TAIL
)

# A deleted job that others wait for counts as cancelled for them; that is
# settled first, in its own statement, so the function sees the edges.
_SETTLE_DELETED = f"""
WITH target AS (
  SELECT id FROM {JOB}
  WHERE id = ANY(%(job_id)s::bigint[]) AND status <> '{IN_PROGRESS}' AND has_dependents
  ORDER BY id FOR UPDATE
)
{_settle("target", "'cancelled'", "true")}
"""

# Events and edges go in the same statement: the foreign keys are deferred,
# and a job's history has no meaning without the job.
_DELETE = f"""
WITH target AS (
  SELECT id FROM {JOB} WHERE id = ANY(%(job_id)s::bigint[]) AND status <> '{IN_PROGRESS}'
  ORDER BY id FOR UPDATE
), events AS (
  DELETE FROM {EVENT} e USING target WHERE e.job_id = target.id
), edges AS (
  DELETE FROM {DEPENDENCY} e USING target WHERE e.job_id = target.id OR e.depends_on_id = target.id
), gone AS (
  DELETE FROM {JOB} j USING target WHERE j.id = target.id RETURNING j.id
)
SELECT id FROM gone
"""

_SET_PAUSED = f"""
UPDATE {QUEUE} SET paused = %(paused)s, updated_at = now()
WHERE name = ANY(%(names)s::text[]) AND paused <> %(paused)s
RETURNING name
"""


def _ids(jobs: Iterable[Job | int]) -> list[int]:
    return [j.pk if isinstance(j, Job) else int(j) for j in jobs]


def _act(sql: str, params: dict[str, Any], *, wake: bool) -> list[int]:
    """Run one operator statement in a small transaction; NOTIFY the queues it made runnable.

    A job going back to pending may meet a key that a concurrent enqueue just
    gave to a new pending job; the statement then runs again on a fresh
    snapshot, where the newer job keeps the key.
    """
    from django.db import IntegrityError

    alias = _db_alias()
    for attempt in range(3):
        try:
            with transaction.atomic(using=alias), connections[alias].cursor() as cur:
                cur.execute(sql, params)
                rows = cur.fetchall()
                if wake:
                    notify_queues(cur, [r[1] for r in rows])
            return sorted(r[0] for r in rows)
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def retry_now(jobs: Iterable[Job | int], reason: str = "") -> list[int]:
    """Run failed or cancelled jobs again now, and jobs waiting out a retry back-off at once.

    The job becomes pending with ``run_at`` = now and is un-held; a job with no
    attempts left gets one more (``max_attempts`` = attempts + 1). Its key
    goes back with it unless a newer pending job holds that key. Writes a
    ``manual_retry`` event; returns the ids it changed.
    """
    ids = _ids(jobs)
    if not ids:
        return []
    return _act(_RETRY_NOW, {"job_id": ids, "reason": reason, "kind": "manual_retry"}, wake=True)


def run_now(jobs: Iterable[Job | int], reason: str = "") -> list[int]:
    """Make pending jobs whose ``run_at`` is in the future runnable now (a ``run_now`` event).

    A held job stays held: run now changes when a job may run, not whether.
    """
    ids = _ids(jobs)
    if not ids:
        return []
    return _act(_RUN_NOW, {"job_id": ids, "reason": reason, "kind": "run_now"}, wake=True)


def hold(jobs: Iterable[Job | int], reason: str = "") -> list[int]:
    """Keep pending jobs from being claimed (``enabled`` = false, a ``held`` event)."""
    ids = _ids(jobs)
    if not ids:
        return []
    params = {"job_id": ids, "reason": reason, "enabled": False, "kind": "held"}
    return _act(_SET_ENABLED, params, wake=False)


def release_hold(jobs: Iterable[Job | int], reason: str = "") -> list[int]:
    """Let held pending jobs be claimed again (a ``hold_released`` event) and wake their workers."""
    ids = _ids(jobs)
    if not ids:
        return []
    params = {"job_id": ids, "reason": reason, "enabled": True, "kind": "hold_released"}
    return _act(_SET_ENABLED, params, wake=True)


def delete(jobs: Iterable[Job | int]) -> list[int]:
    """Delete jobs and their history; running jobs are refused (cancel them first).

    A running attempt keeps its lease until it is cancelled, so deleting only
    finished, pending or cancelled jobs means no worker ever writes to a job
    that vanished under it. Returns the ids deleted.
    """
    ids = _ids(jobs)
    if not ids:
        return []
    alias = _db_alias()
    with transaction.atomic(using=alias), connections[alias].cursor() as cur:
        cur.execute(_SETTLE_DELETED, {"job_id": ids})
        cur.execute(_DELETE, {"job_id": ids})
        return sorted(r[0] for r in cur.fetchall())


def pause_queues(names: Iterable[str]) -> list[str]:
    """Pause queues: their jobs stay, no worker claims them. Returns the names that changed."""
    return _set_paused(names, paused=True)


def resume_queues(names: Iterable[str]) -> list[str]:
    """Resume paused queues and wake their workers at commit. Returns the names that changed."""
    return _set_paused(names, paused=False)


def _set_paused(names: Iterable[str], *, paused: bool) -> list[str]:
    names = sorted(set(names))
    if not names:
        return []
    alias = _db_alias()
    with transaction.atomic(using=alias), connections[alias].cursor() as cur:
        cur.execute(_SET_PAUSED, {"names": names, "paused": paused})
        changed = sorted(r[0] for r in cur.fetchall())
        if not paused:
            notify_queues(cur, changed)
    return changed


def wake_queues(names: Iterable[str]) -> None:
    """Tell listening workers these queues may have runnable jobs (sent at commit).

    For changes made outside these functions, such as a queue's settings saved
    in the admin: a raised concurrency cap or an unpaused queue takes effect at once.
    """
    names = sorted(set(names))
    if not names:
        return
    with connections[_db_alias()].cursor() as cur:
        notify_queues(cur, names)

"""The worker side, taking work: registration, heartbeats, and the claim that leases jobs."""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from psycopg import sql

from .. import conf
from .tables import CALL, CURRENT, EVENT, IN_PROGRESS, JOB, PENDING, QUEUE, WORKER


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
    capped: bool  # its end frees room others wait for (a concurrency cap, a serial queue or group)
    execution_mode: str = "threads"
    http: dict[str, Any] | None = None  # an HTTP queue's call: url, method, headers, secret alias, path
    wait: float = 0.0  # seconds from run_at to the claim
    trace_context: dict[str, str] | None = None  # the enqueuer's, for the attempt's span
    serial_group: str | None = None  # its serial group: workers of the group's queues wake when it ends
    received: float = 0.0  # time.monotonic() when the claim came back


_REGISTER_WORKER = f"""
INSERT INTO {WORKER} (name, host, pid, queues, concurrency, started_at, last_heartbeat_at)
VALUES (%(name)s, %(host)s, %(pid)s, %(queues)s::jsonb, %(concurrency)s, now(), now())
RETURNING id
"""

# A worker whose row was removed (judged dead while it could not reach the
# database) registers again under its own id, so that the leases it holds or
# is about to write keep pointing at it.
_REGISTER_WORKER_AGAIN = f"""
INSERT INTO {WORKER} (id, name, host, pid, queues, concurrency, started_at, last_heartbeat_at)
VALUES (%(worker_id)s, %(name)s, %(host)s, %(pid)s, %(queues)s::jsonb, %(concurrency)s, now(), now())
ON CONFLICT DO NOTHING
"""

_UNREGISTER_WORKER = f"""
DELETE FROM {WORKER} w WHERE w.id = %(worker_id)s
  AND NOT EXISTS (SELECT 1 FROM {CURRENT} c WHERE c.worker_id = w.id)
"""

_HEARTBEAT = f"""
WITH w AS (
  UPDATE {WORKER} SET last_heartbeat_at = now() WHERE id = %(worker_id)s RETURNING id
), renewed AS (
  UPDATE {CURRENT} c SET lease_expires_at = now() + %(lease)s * interval '1 second'
  FROM unnest(%(job_id)s::bigint[], %(attempt)s::int[]) AS h(job_id, attempt)
  WHERE c.worker_id = %(worker_id)s AND c.job_id = h.job_id AND c.attempt = h.attempt
  RETURNING c.job_id, c.attempt
)
SELECT (SELECT count(*) FROM w), (SELECT array_agg(job_id) FROM renewed),
       (SELECT array_agg(attempt) FROM renewed)
"""

# Rate limits work the same way: the claim counts the attempts the queue
# started in the last rate_period (+ RATE_LIMIT_MARGIN, for the time between a
# claim and its request) seconds of wall clock, from a log of start times
# (QueueCall), and logs the starts it makes. A sliding window: at no moment do
# more than rate_limit starts fall within one window.
# Capped queues are locked first, in their own statement, so that the claim
# statement that follows (a new snapshot) counts every running job committed by
# the previous holder of the lock: two workers can never both see free room.
# NO KEY UPDATE serialises claimers without blocking enqueues, whose foreign
# key check holds KEY SHARE on the same row. A worker whose last claim saw no
# capped queue among those it serves leaves this statement out (most
# deployments have none); such a claim gives capped queues no room
# (``%(locked)s``), and its wake-up statement reports them, so that the next
# claim, at once, takes the locks and their jobs.
_LOCK_CAPPED_QUEUES = f"""
SELECT id FROM {QUEUE}
WHERE (concurrency_limit IS NOT NULL OR rate_limit IS NOT NULL) AND NOT paused
  AND (%(queues)s::text[] IS NULL OR name = ANY(%(queues)s::text[]))
ORDER BY id FOR NO KEY UPDATE
"""

# The queues a claim may take from, with what the claimed jobs need to know.
_CLAIM_QUEUES = f"""
q AS (
  SELECT id, name, concurrency_limit, timeout, execution_mode, rate_limit, serial, head_of_line,
         (rate_period + %(rate_margin)s) * interval '1 second' AS rate_window,
         CASE WHEN http_url <> '' THEN jsonb_build_object(
           'url', http_url, 'method', http_method, 'headers', http_headers, 'secret', http_secret,
           'secret_header', http_secret_header, 'retry_client_errors', http_retry_client_errors,
           'timeout', timeout, 'rate_limited', rate_limit IS NOT NULL) END AS http
  FROM {QUEUE}
  WHERE NOT paused AND (%(queues)s::text[] IS NULL OR name = ANY(%(queues)s::text[]))
)"""

# Room per queue: the claim's limit, less what a concurrency cap or rate limit
# leaves. Jobs claimed beyond a worker's idle slots (``free``) wait for one, so
# queues whose limits count claims (a cap, a rate limit, serial order) only get
# idle slots: a claim there must be followed by a start.
_CLAIM_ROOM = f"""
  SELECT q.id, LEAST(
    CASE WHEN q.concurrency_limit IS NULL AND q.rate_limit IS NULL AND NOT q.serial THEN %(limit)s::int
         WHEN q.concurrency_limit IS NULL AND q.rate_limit IS NULL OR %(locked)s::bool THEN %(free)s::int
         ELSE 0 END,
    CASE WHEN q.concurrency_limit IS NULL THEN %(limit)s::int ELSE GREATEST(0, q.concurrency_limit - (
      SELECT count(*) FROM {JOB} r WHERE r.queue_id = q.id AND r.status = '{IN_PROGRESS}')) END,
    CASE WHEN q.rate_limit IS NULL THEN %(limit)s::int ELSE GREATEST(0, q.rate_limit - (
      SELECT count(*) FROM {CALL} x WHERE x.queue_id = q.id AND x.at > clock_timestamp() - q.rate_window))
    END) AS n
  FROM q"""

# The shared end of both claim statements: given ``claimed`` (the jobs just
# marked in progress, leases written), log rate-limited starts, write the
# "started" events and return what the worker needs. ``{where}`` is the
# serial claim's note of how many it took.
_CLAIM_TAIL = f"""
, calls AS (
  INSERT INTO {CALL} (queue_id, at)
  SELECT c.queue_id, clock_timestamp() FROM claimed c JOIN q ON q.id = c.queue_id
  WHERE q.rate_limit IS NOT NULL
), started AS (
  INSERT INTO {EVENT} (job_id, kind, attempt, worker_name, at, error_class, error_message, traceback)
  SELECT id, 'started', attempts, %(worker_name)s, now(), '', '', '' FROM claimed
)
SELECT c.id, q.name, c.task_name, c.payload, c.args, c.attempts, c.max_attempts, q.timeout,
       q.concurrency_limit IS NOT NULL OR q.serial OR c.serial_group IS NOT NULL, q.execution_mode,
       q.http || jsonb_build_object('path', c.http_path),
       extract(epoch FROM now() - c.run_at)::float8, c.trace_context, c.serial_group
FROM claimed c JOIN q ON q.id = c.queue_id {{where}}
ORDER BY c.priority DESC, c.run_at, c.id
"""

# Some pending job's group, or NULL: min() reads one entry of the group index.
_ANY_GROUP = f"""
SELECT min(g.serial_group) FROM {JOB} g
WHERE g.status = '{PENDING}' AND g.enabled AND g.serial_group IS NOT NULL"""

#: A transaction-local setting: how many jobs _CLAIM_SERIAL took, which _CLAIM
#: leaves out of its limit (both run in one transaction, sent as one pipeline).
_SERIAL_CLAIMED = "supaqueue.serial_claimed"

# Serial queues and groups: a serial queue's jobs, and a serial group's jobs
# (across queues), run one at a time, in claim order. The guarantee is the
# lease table's: its serial_queue and serial_group columns each have a partial
# unique index, so two leases can never hold the same queue or group.
#
# This statement runs first in a claim and takes only such jobs. Each idle
# queue or group offers its head (a job waiting for its retry stays the head
# while its queue keeps head_of_line); the head is locked by id (skipped, never
# replaced, when another transaction holds it); its lease is inserted ON
# CONFLICT DO NOTHING (a concurrent claim of the same queue or group makes it
# wait, then skip), and only the jobs whose lease went in are marked in
# progress. When no served queue is serial and no pending job has a group, the
# one-time ``serial_work`` test stops it after two index probes.
_CLAIM_SERIAL = (
    "WITH"
    + _CLAIM_QUEUES
    + f"""
, serial_work AS (
  SELECT EXISTS (SELECT 1 FROM q WHERE q.serial) OR ({_ANY_GROUP}) IS NOT NULL AS yes
), room AS ("""
    + _CLAIM_ROOM
    + f"""
  WHERE (SELECT yes FROM serial_work)
), queue_heads AS (
  SELECT h.id FROM q, LATERAL (
    SELECT u.id, u.run_at FROM (
      (SELECT 0 AS rank, j.id, j.run_at FROM {JOB} j
       WHERE q.head_of_line AND j.queue_id = q.id AND j.status = '{PENDING}' AND j.enabled
         AND j.attempts > 0
       ORDER BY j.priority DESC, j.run_at, j.id LIMIT 1)
      UNION ALL
      (SELECT 1, j.id, j.run_at FROM {JOB} j
       WHERE j.queue_id = q.id AND j.status = '{PENDING}' AND j.enabled AND j.run_at <= now()
       ORDER BY j.priority DESC, j.run_at, j.id LIMIT 1)
    ) u ORDER BY u.rank LIMIT 1
  ) h
  WHERE q.serial AND h.run_at <= now()
    AND NOT EXISTS (SELECT 1 FROM {CURRENT} c WHERE c.serial_queue = q.id)
), group_heads AS (
  SELECT DISTINCT ON (j.serial_group) j.id, j.run_at
  FROM {JOB} j JOIN {QUEUE} x ON x.id = j.queue_id
  WHERE (SELECT yes FROM serial_work)
    AND j.status = '{PENDING}' AND j.enabled AND j.serial_group IS NOT NULL AND NOT x.paused
    AND (j.run_at <= now() OR (x.head_of_line AND j.attempts > 0))
  ORDER BY j.serial_group, (x.head_of_line AND j.attempts > 0) DESC, j.priority DESC, j.run_at, j.id
), heads AS (
  SELECT j.id, j.queue_id, j.priority, j.run_at, j.attempts, j.serial_group,
         CASE WHEN q.serial THEN q.id END AS serial_queue
  FROM (SELECT id FROM queue_heads UNION SELECT id FROM group_heads WHERE run_at <= now()) h
  JOIN {JOB} j ON j.id = h.id JOIN q ON q.id = j.queue_id
  WHERE j.status = '{PENDING}' AND j.enabled AND j.run_at <= now()
    AND (NOT q.serial OR j.id IN (SELECT id FROM queue_heads))
    AND (j.serial_group IS NULL OR j.id IN (SELECT id FROM group_heads))
    AND NOT EXISTS (SELECT 1 FROM {CURRENT} c WHERE c.serial_group = j.serial_group)
    AND (%(job_ids)s::bigint[] IS NULL OR j.id = ANY(%(job_ids)s::bigint[]))
  FOR UPDATE OF j SKIP LOCKED
), picked AS (
  SELECT h.* FROM (
    SELECT h.*, row_number() OVER (PARTITION BY h.queue_id ORDER BY h.priority DESC, h.run_at, h.id) AS rn
    FROM heads h
  ) h JOIN room ON room.id = h.queue_id
  WHERE h.rn <= room.n
  ORDER BY h.priority DESC, h.run_at, h.id
  LIMIT %(free)s::int
), lease AS (
  INSERT INTO {CURRENT} (job_id, worker_id, attempt, started_at, lease_expires_at, serial_queue,
                         serial_group)
  SELECT id, %(worker_id)s, attempts + 1, now(), now() + %(lease)s * interval '1 second',
         serial_queue, serial_group
  FROM picked ORDER BY serial_queue, serial_group
  ON CONFLICT DO NOTHING
  RETURNING job_id
), claimed AS (
  UPDATE {JOB} j SET status = '{IN_PROGRESS}', attempts = j.attempts + 1, started_at = now()
  FROM lease WHERE j.id = lease.job_id
  RETURNING j.id, j.queue_id, j.task_name, j.payload, j.args, j.attempts, j.max_attempts,
            j.priority, j.run_at, j.http_path, j.trace_context, j.serial_group
)"""
    + _CLAIM_TAIL.format(
        where=f"WHERE set_config('{_SERIAL_CLAIMED}', (SELECT count(*) FROM claimed)::text, true) <> ''"
    )
)

# The claim of every other job: runnable jobs of each queue through the claim
# index, within each queue's room, SKIP LOCKED. It runs after _CLAIM_SERIAL in
# the same transaction and takes what is left of the limit (no setting: nothing
# was taken; a setting outlives its transaction as ''). The cut comes last, so
# that the planner sizes every step by the constant limit.
_CLAIM = (
    "WITH"
    + _CLAIM_QUEUES
    + f"""
, want AS (
  SELECT GREATEST(0, %(limit)s::int
    - COALESCE(NULLIF(current_setting('{_SERIAL_CLAIMED}', true), '')::int, 0)) AS n
), room AS ("""
    + _CLAIM_ROOM
    + f"""
  WHERE NOT q.serial
), picked AS (
  SELECT c.id FROM room, LATERAL (
    SELECT j.id, j.priority, j.run_at FROM {JOB} j
    WHERE j.queue_id = room.id AND j.status = '{PENDING}' AND j.enabled AND j.run_at <= now()
      AND j.serial_group IS NULL
      AND (%(job_ids)s::bigint[] IS NULL OR j.id = ANY(%(job_ids)s::bigint[]))
    ORDER BY j.priority DESC, j.run_at, j.id
    LIMIT room.n
    FOR UPDATE SKIP LOCKED
  ) c
  ORDER BY c.priority DESC, c.run_at, c.id
  LIMIT %(limit)s::int
), claimed AS (
  UPDATE {JOB} j SET status = '{IN_PROGRESS}', attempts = j.attempts + 1, started_at = now()
  FROM (SELECT id FROM picked LIMIT (SELECT n FROM want)) p WHERE j.id = p.id
  RETURNING j.id, j.queue_id, j.task_name, j.payload, j.args, j.attempts, j.max_attempts,
            j.priority, j.run_at, j.http_path, j.trace_context, j.serial_group
), pruned AS (
  DELETE FROM {CALL} x USING q
  WHERE x.queue_id = q.id AND q.rate_limit IS NOT NULL AND x.at < clock_timestamp() - q.rate_window
), lease AS (
  INSERT INTO {CURRENT} (job_id, worker_id, attempt, started_at, lease_expires_at)
  SELECT id, %(worker_id)s, attempts, now(), now() + %(lease)s * interval '1 second' FROM claimed
)"""
    + _CLAIM_TAIL.format(where="")
)

# When a rate-limited queue with due jobs will have room again (epoch seconds,
# only if in the future): a worker sleeps until then rather than until its poll.
# The LATERAL keeps the queues first: an EXISTS here was planned as a scan of
# every runnable job, on every claim, even with no rate-limited queue at all.
# Second column: whether the next claim needs _CLAIM_SERIAL (a served queue is
# serial, or a pending job has a group); two index probes, so that workers of
# deployments without serial work never send it. Third: whether it needs
# _LOCK_CAPPED_QUEUES (a served queue has a cap or a rate limit).
_RATE_WAKE = f"""
SELECT extract(epoch FROM min(w.next))::float8,
       EXISTS (SELECT 1 FROM {QUEUE} s WHERE s.serial AND NOT s.paused
               AND ({{queues}}::text[] IS NULL OR s.name = ANY({{queues}}::text[])))
       OR ({_ANY_GROUP}) IS NOT NULL,
       EXISTS (SELECT 1 FROM {QUEUE} c WHERE (c.concurrency_limit IS NOT NULL OR c.rate_limit IS NOT NULL)
               AND NOT c.paused AND ({{queues}}::text[] IS NULL OR c.name = ANY({{queues}}::text[])))
FROM (
  SELECT (SELECT x.at FROM {CALL} x WHERE x.queue_id = q.id ORDER BY x.at DESC
          OFFSET q.rate_limit - 1 LIMIT 1) + (q.rate_period + {{rate_margin}}) * interval '1 second' AS next
  FROM {QUEUE} q, LATERAL (
    SELECT 1 FROM {JOB} j WHERE j.queue_id = q.id AND j.status = '{PENDING}' AND j.enabled
      AND j.run_at <= now() LIMIT 1) due
  WHERE q.rate_limit IS NOT NULL AND NOT q.paused
    AND ({{queues}}::text[] IS NULL OR q.name = ANY({{queues}}::text[]))
) w WHERE w.next > clock_timestamp()
"""


@functools.lru_cache(maxsize=32)
def rate_wake_statement(queues: tuple[str, ...] | None, rate_margin: float) -> str:
    """_RATE_WAKE for one worker, its constants written in: a statement without parameters.

    With the queue names as a parameter, PostgreSQL judged a custom plan (the
    name index, one queue) ten times cheaper than the generic one and planned
    the statement again on every claim of a worker serving named queues
    (0.27 ms of a 1 ms idle claim). A worker's queues never change, so it
    prepares this text once and its one plan is made once.
    """
    return (
        sql.SQL(_RATE_WAKE)
        .format(
            queues=sql.Literal(list(queues) if queues is not None else None),
            rate_margin=sql.Literal(float(rate_margin)),
        )
        .as_string(None)
    )


_DELETE_STALE_WORKERS = f"""
DELETE FROM {WORKER} w
WHERE w.last_heartbeat_at < now() - %(stale)s * interval '1 second'
  AND NOT EXISTS (SELECT 1 FROM {CURRENT} c WHERE c.worker_id = w.id)
"""


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
        conn.execute(_REGISTER_WORKER_AGAIN, params)
        return worker_id
    return conn.execute(_REGISTER_WORKER, params).fetchone()[0]


def unregister_worker(conn: Any, worker_id: int) -> None:
    """Remove the Worker row, unless it still holds leases (then recovery handles them)."""
    conn.execute(_UNREGISTER_WORKER, {"worker_id": worker_id})


class Beat(NamedTuple):
    """What a heartbeat found: whether the Worker row is there, and the leases it renewed."""

    registered: bool
    renewed: set[tuple[int, int]]


def heartbeat(conn: Any, worker_id: int, lease_seconds: float, held: Sequence[tuple[int, int]]) -> Beat:
    """Renew the leases of the attempts this worker is running.

    Only attempts the worker knows it runs are renewed: a lease whose claim
    committed while the connection died was never dispatched, and must expire.
    A held attempt missing from ``renewed`` lost its lease (recovered by
    another worker after the lease ran out): its body should stop, since its
    job may already run elsewhere. Leases are renewed by worker id even when
    the row is gone, so that a worker can register again without a gap.
    """
    alive, job_ids, attempts = conn.execute(
        _HEARTBEAT,
        {
            "worker_id": worker_id,
            "lease": lease_seconds,
            "job_id": [h[0] for h in held],
            "attempt": [h[1] for h in held],
        },
    ).fetchone()
    return Beat(bool(alive), set(zip(job_ids or [], attempts or [], strict=True)))


_EXPIRE_LEASES = f"""
UPDATE {CURRENT} c SET lease_expires_at = LEAST(c.lease_expires_at, now() + %(after)s * interval '1 second')
FROM unnest(%(job_id)s::bigint[], %(attempt)s::int[]) AS h(job_id, attempt)
WHERE c.worker_id = %(worker_id)s AND c.job_id = h.job_id AND c.attempt = h.attempt
"""


def expire_leases(conn: Any, *, worker_id: int, held: Sequence[tuple[int, int]], after: float) -> None:
    """Let these leases run out ``after`` seconds from now, into the usual recovery.

    For attempts a worker process leaves behind as it exits (their threads
    would not stop): the exit ends the bodies, and recovery then retries or
    fails the jobs as for any lost worker, counting the attempt.
    """
    if held:
        conn.execute(
            _EXPIRE_LEASES,
            {
                "job_id": [h[0] for h in held],
                "attempt": [h[1] for h in held],
                "worker_id": worker_id,
                "after": after,
            },
        )


def _claim_params(
    worker_id: int,
    worker_name: str,
    queues: Sequence[str] | None,
    limit: int,
    lease_seconds: float,
    job_ids: Sequence[int] | None = None,
    free: int | None = None,
    locked: bool = True,
) -> dict[str, Any]:
    return {
        "locked": locked,
        "queues": list(queues) if queues else None,
        "limit": limit,
        "free": limit if free is None else min(free, limit),
        "worker_id": worker_id,
        "worker_name": worker_name,
        "lease": lease_seconds,
        "rate_margin": float(conf.get("RATE_LIMIT_MARGIN")),
        "job_ids": list(job_ids) if job_ids is not None else None,
    }


def claim(
    conn: Any,
    *,
    worker_id: int,
    worker_name: str,
    queues: Sequence[str] | None,
    limit: int,
    lease_seconds: float,
    job_ids: Sequence[int] | None = None,
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
    params = _claim_params(worker_id, worker_name, queues, limit, lease_seconds, job_ids)
    conn.execute(_LOCK_CAPPED_QUEUES, params)
    rows = conn.execute(_CLAIM_SERIAL, params).fetchall()
    rows += conn.execute(_CLAIM, params).fetchall()
    received = time.monotonic()
    return [ClaimedJob(*r, received=received) for r in rows]

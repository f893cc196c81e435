"""Read-only figures for the admin: counts, latency, throughput and failures, cheap at any size.

Nothing here changes a row (every state change is in the ``queue`` package). The
statements are shaped for tables of millions of jobs: a count is exact only up
to a bound and estimated by the planner past it, every scan follows an index,
and the last-hour figures read only the last hour of events (a BRIN index on
the event time, sql/dashboard_reads.sql).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import connections
from django.db.models import QuerySet

from . import conf
from .models import CurrentJob, Job, JobEvent, Queue, QueueCall, Worker

JOB = Job._meta.db_table
EVENT = JobEvent._meta.db_table
QUEUE = Queue._meta.db_table

#: Counts up to this are exact; past it they are the planner's estimate.
EXACT_COUNT_LIMIT = 10_000
#: Attempt outcomes, as event kinds: what throughput and failure rate count.
SUCCEEDED_KINDS = ("succeeded",)
FAILED_KINDS = ("failed", "retried")


@dataclasses.dataclass(frozen=True)
class Count:
    """A row count, and whether it is exact or the planner's estimate."""

    value: int
    exact: bool

    def __str__(self) -> str:
        return f"{self.value:,}" if self.exact else f"≈{self.value:,}"

    def as_json(self) -> dict[str, Any]:
        return {"value": self.value, "exact": self.exact}


def _cursor() -> Any:
    return connections[conf.get("DATABASE")].cursor()


def _plan_rows(sql: str, params: Sequence[Any] | dict[str, Any]) -> int:
    with _cursor() as cur:
        cur.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        plan = cur.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def estimate(queryset: QuerySet) -> int:
    """The planner's row estimate for a queryset: planning only, no rows read."""
    sql, params = queryset.order_by().query.sql_with_params()
    return _plan_rows(sql, params)


def count(queryset: QuerySet, limit: int = EXACT_COUNT_LIMIT) -> Count:
    """Exact up to ``limit`` rows (a count of a LIMITed subquery), estimated past it."""
    n = queryset.order_by()[: limit + 1].count()
    if n <= limit:
        return Count(n, True)
    return Count(max(estimate(queryset), n), False)


def _bounded(condition: str) -> str:
    return (
        f"(SELECT count(*) FROM (SELECT 1 FROM {JOB} j WHERE j.queue_id = q.id AND {condition} "
        "LIMIT %(cap)s) bounded)"
    )


# Each status is counted through an index that holds it (see Job.Meta.indexes), with
# the status written in, so that the planner can match a partial index's condition:
# pending jobs through the claim index and the index of held jobs, running ones
# through the index of running jobs, the rest through the (queue, status) index.
_COUNTED = {
    Job.Status.PENDING: ("j.status = 'pending' AND j.enabled", "j.status = 'pending' AND NOT j.enabled"),
    Job.Status.IN_PROGRESS: ("j.status = 'in_progress'",),
}
_STATUS_COUNTS = (
    "SELECT q.id, "
    + ", ".join(
        " + ".join(_bounded(c) for c in _COUNTED.get(status, (f"j.status = '{status.value}'",)))
        for status in Job.Status
    )
    + f" FROM {QUEUE} q WHERE q.id = ANY(%(queue_ids)s::bigint[])"
)

_ESTIMATE_ONE = f"SELECT 1 FROM {JOB} WHERE queue_id = %s AND status = %s"


def status_counts(queue_ids: Sequence[int], limit: int = EXACT_COUNT_LIMIT) -> dict[int, dict[str, Count]]:
    """Jobs per status for each queue: {queue id: {status: Count}}.

    One statement reads at most ``limit`` + 1 index entries per queue and
    status (see _COUNTED); the pairs past the limit are estimated by the
    planner, which the multivariate statistics on (queue, status) keep close.
    """
    queue_ids = list(queue_ids)
    result: dict[int, dict[str, Count]] = {qid: {} for qid in queue_ids}
    if not queue_ids:
        return result
    with _cursor() as cur:
        cur.execute(_STATUS_COUNTS, {"cap": limit + 1, "queue_ids": queue_ids})
        rows = cur.fetchall()
    for queue_id, *counts in rows:
        for status, n in zip(Job.Status, counts, strict=True):
            if n <= limit:
                result[queue_id][status.value] = Count(n, True)
            else:
                estimate = _plan_rows(_ESTIMATE_ONE, [queue_id, status.value])
                result[queue_id][status.value] = Count(max(estimate, n), False)
    return result


# The oldest runnable job of a queue, found with the claim index alone: a
# loose index scan visits each distinct priority of the queue's pending jobs,
# and for each reads the first entry (the earliest run_at). A backlog of a
# million jobs costs a few index probes per priority in use, not a million.
_OLDEST_RUNNABLE = f"""
SELECT q.id, (
  WITH RECURSIVE prio AS (
    (SELECT j.priority FROM {JOB} j
     WHERE j.queue_id = q.id AND j.status = 'pending' AND j.enabled
     ORDER BY j.priority DESC LIMIT 1)
    UNION ALL
    SELECT (SELECT j.priority FROM {JOB} j
            WHERE j.queue_id = q.id AND j.status = 'pending' AND j.enabled AND j.priority < prio.priority
            ORDER BY j.priority DESC LIMIT 1)
    FROM prio WHERE prio.priority IS NOT NULL
  )
  SELECT min((SELECT j.run_at FROM {JOB} j
              WHERE j.queue_id = q.id AND j.status = 'pending' AND j.enabled
                AND j.priority = prio.priority AND j.run_at <= now()
              ORDER BY j.run_at, j.id LIMIT 1))
  FROM prio WHERE prio.priority IS NOT NULL
)
FROM {QUEUE} q WHERE q.id = ANY(%(queue_ids)s::bigint[])
"""


def oldest_runnable(queue_ids: Sequence[int]) -> dict[int, datetime | None]:
    """The ``run_at`` of each queue's longest-waiting runnable job (None when nothing waits).

    Its age is the queue's latency: how late the next job to start will be.
    Held jobs and jobs whose ``run_at`` is still ahead do not wait, so they do not count.
    """
    queue_ids = list(queue_ids)
    if not queue_ids:
        return {}
    with _cursor() as cur:
        cur.execute(_OLDEST_RUNNABLE, {"queue_ids": queue_ids})
        return dict(cur.fetchall())


# The time bound is a plain expression of the clock, so that it is an index
# condition on the BRIN index rather than a join. The clock is the statement's,
# the one an event's ``at`` default reads: inside a longer transaction, now()
# is its start, and an event written since could fall after the last minute.
_FIRST_MINUTE = "date_trunc('minute', statement_timestamp()) - (%(minutes)s - 1) * interval '1 minute'"
_THROUGHPUT = f"""
WITH per_minute AS (
  SELECT date_trunc('minute', e.at) AS minute,
         count(*) FILTER (WHERE e.kind = ANY(%(ok)s::text[])) AS succeeded,
         count(*) FILTER (WHERE e.kind = ANY(%(bad)s::text[])) AS failed
  FROM {EVENT} e
  WHERE e.at >= {_FIRST_MINUTE} AND e.kind = ANY(%(kinds)s::text[])
  GROUP BY 1
)
SELECT m.minute, COALESCE(p.succeeded, 0), COALESCE(p.failed, 0)
FROM generate_series({_FIRST_MINUTE}, date_trunc('minute', statement_timestamp()), interval '1 minute')
     AS m(minute)
LEFT JOIN per_minute p ON p.minute = m.minute
ORDER BY m.minute
"""


@dataclasses.dataclass(frozen=True)
class Minute:
    """Attempts that ended in one minute, and how many of them failed."""

    minute: datetime
    succeeded: int
    failed: int

    @property
    def total(self) -> int:
        return self.succeeded + self.failed

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.total if self.total else None


def throughput(minutes: int = 60) -> list[Minute]:
    """Attempts finished per minute over the last ``minutes`` minutes, oldest first, the current one last.

    A failed attempt counts whether it will be retried or not (``retried`` and
    ``failed`` events): the failure rate is of attempts, which is what a
    struggling dependency shows up in first.
    """
    params = {
        "minutes": minutes,
        "ok": list(SUCCEEDED_KINDS),
        "bad": list(FAILED_KINDS),
        "kinds": [*SUCCEEDED_KINDS, *FAILED_KINDS],
    }
    with _cursor() as cur:
        cur.execute(_THROUGHPUT, params)
        return [Minute(*row) for row in cur.fetchall()]


_FAILURES = f"""
WITH g AS (
  SELECT error_class, count(*) AS n, max(id) AS last_id FROM {EVENT}
  WHERE at >= statement_timestamp() - %(minutes)s * interval '1 minute' AND kind = ANY(%(bad)s::text[])
  GROUP BY error_class ORDER BY n DESC, error_class LIMIT %(limit)s
)
SELECT g.error_class, g.n, e.at, e.job_id, left(e.error_message, 300)
FROM g JOIN {EVENT} e ON e.id = g.last_id
ORDER BY g.n DESC, g.error_class
"""


@dataclasses.dataclass(frozen=True)
class FailureGroup:
    """Failed attempts of one error class, with the latest one's job and message."""

    error_class: str
    count: int
    last_at: datetime
    last_job_id: int
    last_message: str


def recent_failures(minutes: int = 60, limit: int = 20) -> list[FailureGroup]:
    """Failed attempts in the last ``minutes`` minutes grouped by error class, the commonest first."""
    params = {"minutes": minutes, "bad": list(FAILED_KINDS), "limit": limit}
    with _cursor() as cur:
        cur.execute(_FAILURES, params)
        return [FailureGroup(*row) for row in cur.fetchall()]


# --------------------------------------------------------------------------
# The operators' snapshot (supaqueue_status, supaqueue_health, metrics gauges)
# --------------------------------------------------------------------------

_FINISHED_SINCE = f"""
SELECT status, count(*) FROM {JOB}
WHERE finished_at IS NOT NULL AND finished_at > now() - make_interval(secs => %s) GROUP BY status
"""
_WORKERS = f"""
SELECT w.name, w.host, w.pid, w.concurrency, extract(epoch FROM now() - w.last_heartbeat_at)::float8,
       coalesce(array_agg(j.task_name ORDER BY j.id) FILTER (WHERE j.id IS NOT NULL), '{{}}')
FROM {Worker._meta.db_table} w
LEFT JOIN {CurrentJob._meta.db_table} c ON c.worker_id = w.id
LEFT JOIN {JOB} j ON j.id = c.job_id
GROUP BY w.id ORDER BY w.name
"""


def snapshot(window_seconds: float = 60.0) -> dict[str, Any]:
    """Everything the status view shows, as plain JSON-able data (counts past 10,000 are estimates)."""
    queues = list(Queue.objects.values_list("id", "name", "paused", "concurrency_limit"))
    ids = [q[0] for q in queues]
    counts = status_counts(ids)
    oldest = oldest_runnable(ids)
    with _cursor() as cur:
        cur.execute("SELECT now()")
        now = cur.fetchone()[0]
        cur.execute(_FINISHED_SINCE, [window_seconds])
        finished = dict(cur.fetchall())
        cur.execute(_WORKERS)
        workers = cur.fetchall()
    return {
        "at": now.isoformat(timespec="seconds"),
        "queues": {
            name: {
                "paused": paused,
                "concurrency_limit": cap,
                "counts": {s: counts[qid][s].value if s in counts[qid] else 0 for s in Job.Status.values},
                "oldest_runnable_seconds": (
                    round((now - oldest[qid]).total_seconds(), 3) if oldest.get(qid) else None
                ),
            }
            for qid, name, paused, cap in queues
        },
        "finished_last_minute": {s: finished.get(s, 0) for s in ("successful", "failed", "cancelled")},
        "workers": [
            {
                "name": name,
                "host": host,
                "pid": pid,
                "concurrency": conc,
                "seconds_since_heartbeat": round(age, 3),
                "running": list(running),
            }
            for name, host, pid, conc, age, running in workers
        ],
    }


_RATE_ROOM = f"""
SELECT q.name, q.rate_limit, (
  SELECT count(*) FROM {QueueCall._meta.db_table} c
  WHERE c.queue_id = q.id AND c.at > clock_timestamp() - q.rate_period * interval '1 second')
FROM {QUEUE} q WHERE q.rate_limit IS NOT NULL
"""


def rate_limit_room() -> dict[str, int]:
    """Calls each rate-limited queue may still start in its current window (0: its jobs wait)."""
    with _cursor() as cur:
        cur.execute(_RATE_ROOM)
        return {name: max(0, limit - used) for name, limit, used in cur.fetchall()}

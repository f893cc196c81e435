"""The producer side: writing jobs, one at a time or many, with keys (Django's connection)."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from django.db import connections, transaction

from .. import conf, tracing
from ..exceptions import InvalidOption
from ..models import Job
from . import prepared
from .graph import _enqueue_graph
from .rows import (
    _JOB_COLUMNS,
    _PENDING_BY_KEY,
    _columns,
    _defaults,
    _job_from_row,
    _job_from_text_row,
    _job_values,
    _job_with,
    _match_written,
)
from .spec import JobSpec, _Row, check_key, payload_text
from .tables import JOB, ON_PENDING_KEY, PENDING, QUEUE, _db_alias

_INSERT_ONE = f"""
INSERT INTO {JOB} (queue_id, task_name, payload, args, status, priority, run_at, attempts,
                   max_attempts, key, enabled, last_error, created_at, http_path, owner_id, tenant_id,
                   trace_context, serial_group)
SELECT q.id, %(task_name)s, %(payload)s::jsonb, %(args)s::jsonb, '{PENDING}',
       COALESCE(%(priority)s::int, q.priority, %(default_priority)s::int),
       COALESCE(%(run_at)s::timestamptz, now()), 0,
       COALESCE(%(max_attempts)s::int, q.max_attempts, %(default_max_attempts)s::int),
       %(key)s, true, '', now(), %(http_path)s, %(owner_id)s, %(tenant_id)s, %(trace)s::jsonb,
       %(serial_group)s
FROM {QUEUE} q WHERE q.name = %(queue)s
{ON_PENDING_KEY} DO NOTHING
RETURNING id, queue_id, priority, run_at, max_attempts, created_at
"""

# The key modes other than "dedupe": the pending job holding the key takes the
# new call's values (all of them, or all but run_at) and keeps its id, its
# history and its place in any dependency graph.
_UPSERT_ONE = f"""
INSERT INTO {JOB} AS j (queue_id, task_name, payload, args, status, priority, run_at, attempts,
                   max_attempts, key, enabled, last_error, created_at, http_path, owner_id, tenant_id,
                   trace_context, serial_group)
SELECT q.id, u.task_name, u.payload::jsonb, u.args::jsonb, '{PENDING}',
       COALESCE(u.priority, q.priority, %(default_priority)s::int),
       COALESCE(u.run_at, now()), 0,
       COALESCE(u.max_attempts, q.max_attempts, %(default_max_attempts)s::int),
       u.key, true, '', now(), u.http_path, u.owner_id, u.tenant_id, %(trace)s::jsonb, u.serial_group
FROM unnest(%(queue)s::text[], %(task_name)s::text[], %(payload)s::text[], %(args)s::text[],
            %(priority)s::int[], %(run_at)s::timestamptz[], %(max_attempts)s::int[], %(key)s::text[],
            %(http_path)s::text[], %(owner_id)s::int[], %(tenant_id)s::text[], %(serial_group)s::text[])
     WITH ORDINALITY AS u(queue, task_name, payload, args, priority, run_at, max_attempts, key, http_path,
                          owner_id, tenant_id, serial_group, n)
JOIN {QUEUE} q ON q.name = u.queue
ORDER BY u.n
{ON_PENDING_KEY} DO UPDATE SET
  queue_id = EXCLUDED.queue_id, task_name = EXCLUDED.task_name, payload = EXCLUDED.payload,
  args = EXCLUDED.args, priority = EXCLUDED.priority, max_attempts = EXCLUDED.max_attempts,
  run_at = CASE WHEN %(key_mode)s = 'replace' THEN EXCLUDED.run_at ELSE j.run_at END,
  http_path = EXCLUDED.http_path, owner_id = EXCLUDED.owner_id, tenant_id = EXCLUDED.tenant_id,
  trace_context = EXCLUDED.trace_context, serial_group = EXCLUDED.serial_group
RETURNING {_JOB_COLUMNS}
"""

_INSERT_MANY = f"""
INSERT INTO {JOB} (queue_id, task_name, payload, args, status, priority, run_at, attempts,
                   max_attempts, key, enabled, last_error, created_at, trace_context, serial_group)
SELECT q.id, u.task_name, u.payload::jsonb, u.args::jsonb, '{PENDING}',
       COALESCE(u.priority, q.priority, %(default_priority)s::int),
       COALESCE(u.run_at, now()), 0,
       COALESCE(u.max_attempts, q.max_attempts, %(default_max_attempts)s::int),
       u.key, true, '', now(), %(trace)s::jsonb, u.serial_group
FROM unnest(%(queue)b::text[], %(task_name)b::text[], %(payload)b::text[], %(args)b::text[],
            %(priority)b::int[], %(run_at)b::timestamptz[], %(max_attempts)b::int[], %(key)b::text[],
            %(serial_group)b::text[])
     WITH ORDINALITY AS u(queue, task_name, payload, args, priority, run_at, max_attempts, key,
                          serial_group, n)
JOIN {QUEUE} q ON q.name = u.queue
ORDER BY u.n
{ON_PENDING_KEY} DO NOTHING
RETURNING id, queue_id, priority, run_at, max_attempts, created_at, key
"""

# enqueue_many of one task with one set of options: only the payload and the key
# differ from job to job, so only they travel as arrays, and every other column
# is one parameter. The rows written share every value they return but their id
# (and key), so one row comes back: the ids and keys in insertion order (ids are
# drawn in that order), and the shared values once. At 20,000 jobs, decoding
# 20,000 rows of seven columns cost a third of the call.
_INSERT_BATCH = f"""
WITH written AS (
  INSERT INTO {JOB} (queue_id, task_name, payload, args, status, priority, run_at, attempts,
                     max_attempts, key, enabled, last_error, created_at, trace_context, serial_group)
  SELECT q.id, %(task_name)s, u.payload::jsonb, %(args)s::jsonb, '{PENDING}',
         COALESCE(%(priority)s::int, q.priority, %(default_priority)s::int),
         COALESCE(%(run_at)s::timestamptz, now()), 0,
         COALESCE(%(max_attempts)s::int, q.max_attempts, %(default_max_attempts)s::int),
         u.key, true, '', now(), %(trace)s::jsonb, %(serial_group)s
  FROM unnest(%(payload)b::text[], %(key)b::text[]) WITH ORDINALITY AS u(payload, key, n)
  JOIN {QUEUE} q ON q.name = %(queue)s
  ORDER BY u.n
  {ON_PENDING_KEY} DO NOTHING
  RETURNING id, queue_id, priority, run_at, max_attempts, created_at, key
)
SELECT array_agg(id ORDER BY id), CASE WHEN count(key) > 0 THEN array_agg(key ORDER BY id) END,
       min(queue_id), min(priority), min(run_at), min(max_attempts), min(created_at)
FROM written
"""

_ENSURE_QUEUES = f"""
INSERT INTO {QUEUE} (name, max_attempts, priority, retry_backoff, retry_backoff_max, timeout,
                     paused, concurrency_limit, serial, head_of_line, created_at, updated_at)
SELECT u.*, now(), now()
FROM unnest(%(name)s::text[], %(max_attempts)s::int[], %(priority)s::int[],
            %(retry_backoff)s::float8[], %(retry_backoff_max)s::float8[],
            %(timeout)s::float8[], %(paused)s::bool[], %(concurrency_limit)s::int[],
            %(serial)s::bool[], %(head_of_line)s::bool[]) AS u
ON CONFLICT (name) DO NOTHING
"""

_QUEUE_DEFAULT_FIELDS = (
    "max_attempts",
    "priority",
    "retry_backoff",
    "retry_backoff_max",
    "timeout",
    "paused",
    "concurrency_limit",
    "serial",
    "head_of_line",
)

#: Called with the jobs each enqueue call wrote, after it wrote them. None in production;
#: django_supaqueue.testing.immediate() sets it to run jobs at once in tests.
after_enqueue: Callable[[Sequence[Job]], None] | None = None


def new_queue_settings(name: str) -> dict[str, Any]:
    """The settings a queue row gets when it is created: SUPAQUEUE['QUEUES'][name], flags filled in."""
    configured = (conf.get("QUEUES") or {}).get(name) or {}
    settings = {field: configured.get(field) for field in _QUEUE_DEFAULT_FIELDS}
    settings["paused"] = bool(settings["paused"])
    settings["serial"] = bool(settings["serial"])
    settings["head_of_line"] = settings["head_of_line"] is None or bool(settings["head_of_line"])
    return settings


def ensure_queues(names: Iterable[str], cursor: Any = None) -> None:
    """Create the named queues that do not exist yet, with SUPAQUEUE['QUEUES'] settings."""
    names = sorted(set(names))
    if not names:
        return
    rows = [new_queue_settings(n) for n in names]
    columns: dict[str, list[Any]] = {"name": names}
    for field in _QUEUE_DEFAULT_FIELDS:
        columns[field] = [row[field] for row in rows]
    if cursor is not None:
        cursor.execute(_ENSURE_QUEUES, columns)
        return
    with connections[_db_alias()].cursor() as cur:
        cur.execute(_ENSURE_QUEUES, columns)


def enqueue_job(spec: JobSpec) -> Job:
    """Write one job: a single INSERT … SELECT in the steady state.

    The statement reads the queue's defaults in the database, so a long-lived
    web process never enqueues with stale queue settings. When the queue does
    not exist yet it is created and the insert is tried again; when the key is
    already pending, the key mode says what becomes of the pending job.
    """
    if spec.depends_on or spec.key_mode != "dedupe":
        return enqueue_jobs([spec])[0]
    row = spec.validated()
    row.trace = tracing.current_context_json()
    alias = _db_alias()
    params = {
        "trace": row.trace,
        "task_name": row.task_name,
        "payload": row.payload,
        "args": row.args,
        "queue": row.queue,
        "priority": row.priority,
        "run_at": row.run_at,
        "max_attempts": row.max_attempts,
        "key": row.key,
        "http_path": spec.http_path,
        "owner_id": spec.owner_id,
        "tenant_id": spec.tenant_id,
        "serial_group": spec.serial_group,
        **_defaults(),
    }
    job = _insert_one(alias, row, params)
    if after_enqueue is not None:
        after_enqueue([job])
    return job


def _insert_one(alias: str, row: _Row, params: dict[str, Any]) -> Job:
    got = prepared.fetch_row(alias, "supaqueue_enqueue", _INSERT_ONE, params)
    if got is not None:
        return _job_from_row(alias, row, *got)
    with connections[alias].cursor() as cur:
        for _ in range(5):
            if row.key is not None:
                cur.execute(_PENDING_BY_KEY, {"keys": [row.key]})
                existing = cur.fetchone()
                if existing is not None:
                    return _job_from_text_row(alias, existing)
            ensure_queues([row.queue], cur)
            cur.execute(_INSERT_ONE, params)
            got = cur.fetchone()
            if got is not None:
                return _job_from_row(alias, row, *got)
    raise RuntimeError(f"could not enqueue into queue {row.queue!r}: it keeps disappearing")


def enqueue_jobs(specs: Sequence[JobSpec]) -> list[Job]:
    """Write many jobs in at most four statements, atomically.

    1. create missing queues; 2. insert every job with one INSERT … SELECT
    FROM unnest(); 3. (only when keys collided) read the pending jobs that won.
    Specs with dependencies or a key mode other than "dedupe" take their own
    paths (_enqueue_graph, _upsert), a few statements more.
    """
    rows = [spec.validated() for spec in specs]
    if not rows:
        return []
    modes = {r.spec.key_mode for r in rows}
    if len(modes) > 1:
        raise InvalidOption("one enqueue call uses one key_mode for all its jobs.")
    trace = tracing.current_context_json()  # one call, one context: every job of the batch shares it
    for r in rows:
        r.trace = trace
    alias = _db_alias()
    with transaction.atomic(using=alias, savepoint=False), connections[alias].cursor() as cur:
        ensure_queues({r.queue for r in rows}, cur)
        if any(r.spec.depends_on for r in rows):
            jobs = _enqueue_graph(cur, alias, rows)
        elif modes != {"dedupe"}:
            jobs = _upsert(cur, alias, rows)
        else:
            jobs = _insert_many(cur, alias, rows)
    if after_enqueue is not None:
        after_enqueue(jobs)
    return jobs


def enqueue_batch(
    template: JobSpec, payloads: Sequence[dict[str, Any]], keys: Sequence[str | None]
) -> list[Job]:
    """Many jobs of one task with one set of options (``Task.enqueue_many``): enqueue_jobs, leaner.

    The options are checked once, not once per job, and rows go to the
    statement as columns without a JobSpec each: at 20,000 jobs the per-job
    objects cost as much as writing the rows. Dependencies or a key mode other
    than "dedupe" take enqueue_jobs' paths.
    """
    if template.depends_on or template.key_mode != "dedupe":
        return enqueue_jobs(
            [dataclasses.replace(template, payload=p, key=k) for p, k in zip(payloads, keys, strict=True)]
        )
    base = template.validated()
    if not payloads:
        return []
    encoded = [payload_text(p) for p in payloads]
    for key in keys:
        check_key(key)
    keyed = any(k is not None for k in keys)
    params = {
        "queue": base.queue,
        "task_name": base.task_name,
        "payload": encoded,
        "args": base.args,
        "priority": base.priority,
        "run_at": base.run_at,
        "max_attempts": base.max_attempts,
        "key": list(keys) if keyed else None,  # unnest() pads a NULL array with NULLs
        "serial_group": template.serial_group,
        "trace": tracing.current_context_json(),
        **_defaults(),
    }
    alias = _db_alias()
    with transaction.atomic(using=alias, savepoint=False), connections[alias].cursor() as cur:
        ensure_queues([base.queue], cur)
        written = prepared.execute(alias, _INSERT_BATCH, params, binary=True).fetchone()
        base.trace = params["trace"]
        jobs = _batch_jobs(cur, alias, base, payloads, keys, written)
    if after_enqueue is not None:
        after_enqueue(jobs)
    return jobs


def _batch_jobs(
    cur: Any,
    alias: str,
    base: _Row,
    payloads: Sequence[dict[str, Any]],
    keys: Sequence[str | None],
    written: Sequence[Any],
) -> list[Job]:
    """The Job of each payload, built from the values every job of the call shares (see _INSERT_BATCH)."""
    ids, written_keys, queue_id, priority, run_at, max_attempts, created_at = written
    shared = _job_values(alias, base)
    shared.update(
        queue_id=queue_id, priority=priority, run_at=run_at, max_attempts=max_attempts, created_at=created_at
    )
    rows = list(zip(ids or (), written_keys or itertools.repeat(None), strict=False))

    def build(n: int, row: tuple[int, str | None]) -> Job:
        return _job_with(alias, shared, id=row[0], payload=payloads[n], key=row[1])

    return _match_written(cur, alias, keys, rows, key_of=lambda v: v[1], build=build)


def _insert_many(cur: Any, alias: str, rows: list[_Row]) -> list[Job]:
    if any(r.spec.http_path or r.spec.owner_id is not None or r.spec.tenant_id is not None for r in rows):
        raise InvalidOption("http_path, owner and tenant_id are set one job at a time (enqueue_job).")
    params = _columns(rows)
    params.update(trace=rows[0].trace, **_defaults())
    written = prepared.execute(alias, _INSERT_MANY, params).fetchall()
    return _match_written(
        cur,
        alias,
        [r.key for r in rows],
        written,
        key_of=lambda v: v[6],
        build=lambda n, v: _job_from_row(alias, rows[n], *v[:6]),
    )


def _upsert(cur: Any, alias: str, rows: list[_Row]) -> list[Job]:
    """The "replace" and "preserve_run_at" key modes: one upsert, the last call per key winning.

    A key that appears twice in one call is written once (an upsert may not
    touch a row twice); every spec of that key gets the same job back. A
    pending job claimed while the upsert waited on its lock has left the key's
    index by then, so the statement inserts a new job instead.
    """
    last: dict[str | None, _Row] = {}
    for r in rows:
        last.pop(r.key, None)
        last[r.key] = r
    unique = list(last.values())
    params = _columns(unique, extended=True)
    params.update(trace=rows[0].trace, key_mode=rows[0].spec.key_mode, **_defaults())
    cur.execute(_UPSERT_ONE, params)
    by_key = {job.key: job for job in (_job_from_text_row(alias, v) for v in cur.fetchall())}
    return [by_key[r.key] for r in rows]

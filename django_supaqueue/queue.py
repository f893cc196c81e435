"""The queue's SQL: enqueue, claim, complete, fail/retry, heartbeat, recover.

Every statement that moves a job through its life cycle lives here, and only
here. The producer side runs on Django's connection (so a job commits or rolls
back with the caller's data); the worker side runs on a plain psycopg
connection the worker owns, passed in as ``conn``.

Each worker-side function is one statement (a CTE chain), so that a batch of
jobs costs one round trip whatever its size, and so that the lease fence
(job, attempt, worker) is checked in the same statement that writes the outcome.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import connections, transaction
from django.utils import timezone

from . import conf, tracing
from .exceptions import InvalidOption, InvalidPayload
from .models import (
    PRIORITY_MAX,
    PRIORITY_MIN,
    CurrentJob,
    Job,
    JobDependency,
    JobEvent,
    Queue,
    QueueCall,
    Worker,
)
from .models import queue_name_validator as _queue_name_validator

QUEUE = Queue._meta.db_table
JOB = Job._meta.db_table
CURRENT = CurrentJob._meta.db_table
EVENT = JobEvent._meta.db_table
DEPENDENCY = JobDependency._meta.db_table
WORKER = Worker._meta.db_table
CALL = QueueCall._meta.db_table

#: The channel the insert trigger (migration 0002) notifies and workers LISTEN on.
CHANNEL = "supaqueue"
#: Cancellations of running attempts are announced here as "<job id> <attempt>".
CANCEL_CHANNEL = "supaqueue_cancel"

PENDING = Job.Status.PENDING.value
WAITING = Job.Status.WAITING.value
FAILED = Job.Status.FAILED.value
SUCCESSFUL = Job.Status.SUCCESSFUL.value
CANCELLED = Job.Status.CANCELLED.value
IN_PROGRESS = Job.Status.IN_PROGRESS.value


# --------------------------------------------------------------------------
# Validation (eager: nothing is written for a bad job)
# --------------------------------------------------------------------------


def check_priority(priority: int) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidOption(f"priority must be an integer, not {priority!r}.")
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise InvalidOption(
            f"priority {priority} is out of range: use {PRIORITY_MIN}..{PRIORITY_MAX} (higher runs first)."
        )
    return priority


def check_max_attempts(max_attempts: int) -> int:
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise InvalidOption(f"max_attempts must be a whole number of at least 1, not {max_attempts!r}.")
    return max_attempts


def check_queue_name(name: str) -> str:
    if not isinstance(name, str) or not name or len(name) > 100:
        raise InvalidOption(f"queue must be a non-empty name of at most 100 characters, not {name!r}.")
    try:
        _queue_name_validator(name)
    except Exception:
        raise InvalidOption(
            f"queue name {name!r} is not valid: use letters, digits, '_', '.', ':' and '-'."
        ) from None
    return name


def check_serial_group(group: str | None) -> str | None:
    if group is not None and (not isinstance(group, str) or not group or len(group) > 255):
        raise InvalidOption(
            f"serial_group must be a non-empty string of at most 255 characters, not {group!r}."
        )
    return group


def check_run_at(run_at: datetime | timedelta | None) -> datetime | None:
    if run_at is None:
        return None
    if isinstance(run_at, timedelta):
        return timezone.now() + run_at
    if not isinstance(run_at, datetime):
        raise InvalidOption(f"run_at must be a datetime or timedelta, not {run_at!r}.")
    if timezone.is_naive(run_at):
        return timezone.make_aware(run_at)
    return run_at


def encode_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidPayload(
            f"{what} must be JSON-serialisable (dicts, lists, strings, numbers, booleans, None): {exc}"
        ) from None


@dataclasses.dataclass
class JobSpec:
    """A job to write, as the caller asked for it (None = fall through to defaults)."""

    task_name: str
    payload: dict[str, Any]
    args: list[Any] = dataclasses.field(default_factory=list)
    queue: str | None = None
    priority: int | None = None
    run_at: datetime | timedelta | None = None
    key: str | None = None
    max_attempts: int | None = None
    http_path: str = ""
    owner_id: int | None = None
    tenant_id: str | None = None
    key_mode: str = "dedupe"
    #: Existing jobs (ids) or earlier specs of the same enqueue_jobs() call.
    depends_on: Sequence[int | JobSpec] = ()
    on_dependency_failure: str | None = None
    serial_group: str | None = None

    def validated(self) -> _Row:
        if not isinstance(self.payload, dict):
            raise InvalidPayload(
                f"payload must be a JSON object (a dict of keyword arguments), not "
                f"{type(self.payload).__name__}."
            )
        if any(not isinstance(k, str) for k in self.payload):
            raise InvalidPayload("payload keys must be strings (they are keyword argument names).")
        if self.key is not None and (not isinstance(self.key, str) or not self.key or len(self.key) > 255):
            raise InvalidOption(
                f"key must be a non-empty string of at most 255 characters, not {self.key!r}."
            )
        if self.key_mode not in KEY_MODES:
            raise InvalidOption(f"key_mode must be one of {', '.join(KEY_MODES)}, not {self.key_mode!r}.")
        if self.key_mode != "dedupe" and self.key is None:
            raise InvalidOption(
                f"key_mode={self.key_mode!r} needs a key: it says what to do when the key exists."
            )
        if self.on_dependency_failure is not None and self.on_dependency_failure not in DEPENDENCY_POLICIES:
            raise InvalidOption(
                f"on_dependency_failure must be one of {', '.join(DEPENDENCY_POLICIES)}, "
                f"not {self.on_dependency_failure!r}."
            )
        check_serial_group(self.serial_group)
        payload = encode_json(self.payload, "payload")
        args = encode_json(list(self.args), "args")
        limit = conf.get("MAX_PAYLOAD_BYTES")
        if limit and len(payload) + len(args) > limit:
            raise InvalidPayload(
                f"payload is {len(payload) + len(args)} bytes of JSON, over SUPAQUEUE['MAX_PAYLOAD_BYTES'] "
                f"({limit}): store large data elsewhere (a model, a file) and pass its id."
            )
        return _Row(
            queue=check_queue_name(self.queue or conf.get("DEFAULT_QUEUE")),
            task_name=self.task_name,
            payload=payload,
            args=args,
            priority=None if self.priority is None else check_priority(self.priority),
            run_at=check_run_at(self.run_at),
            max_attempts=None if self.max_attempts is None else check_max_attempts(self.max_attempts),
            key=self.key,
            spec=self,
        )


@dataclasses.dataclass
class _Row:
    queue: str
    task_name: str
    payload: str
    args: str
    priority: int | None
    run_at: datetime | None
    max_attempts: int | None
    key: str | None
    spec: JobSpec
    trace: str | None = None  # JSON text of the enqueuer's trace context (tracing.py)


# --------------------------------------------------------------------------
# Producer side: enqueue (Django's connection, the caller's transaction)
# --------------------------------------------------------------------------

#: What an enqueue does when a pending job already holds its key: "dedupe" keeps
#: that job and returns it; "replace" (debounce) gives it the new arguments,
#: priority, attempts and run_at; "preserve_run_at" (throttle) all but run_at.
KEY_MODES = ("dedupe", "replace", "preserve_run_at")
#: What a dependent does when a dependency fails for good or is cancelled.
DEPENDENCY_POLICIES = tuple(Job.OnDependencyFailure.values)


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
ON CONFLICT (key) WHERE status IN ('{WAITING}', '{PENDING}') AND key IS NOT NULL DO NOTHING
RETURNING id, queue_id, priority, run_at, max_attempts, created_at
"""

_JOB_COLUMNS = """id, queue_id, task_name, payload::text, args::text, status, priority, run_at, attempts,
       max_attempts, key, enabled, result::text, last_error, created_at, started_at, finished_at,
       http_path, owner_id, tenant_id, trace_context::text, serial_group, waiting_for, has_dependents,
       on_dependency_failure"""

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
ON CONFLICT (key) WHERE status IN ('{WAITING}', '{PENDING}') AND key IS NOT NULL DO UPDATE SET
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
FROM unnest(%(queue)s::text[], %(task_name)s::text[], %(payload)s::text[], %(args)s::text[],
            %(priority)s::int[], %(run_at)s::timestamptz[], %(max_attempts)s::int[], %(key)s::text[],
            %(serial_group)s::text[])
     WITH ORDINALITY AS u(queue, task_name, payload, args, priority, run_at, max_attempts, key,
                          serial_group, n)
JOIN {QUEUE} q ON q.name = u.queue
ORDER BY u.n
ON CONFLICT (key) WHERE status IN ('{WAITING}', '{PENDING}') AND key IS NOT NULL DO NOTHING
RETURNING id, queue_id, priority, run_at, max_attempts, created_at, key
"""

# A job graph: jobs with dependencies start as "waiting" with a count of the
# dependencies still to finish; jobs other jobs depend on are marked first.
_INSERT_GRAPH = f"""
INSERT INTO {JOB} (queue_id, task_name, payload, args, status, priority, run_at, attempts,
                   max_attempts, key, enabled, last_error, created_at, http_path, owner_id, tenant_id,
                   trace_context, serial_group, waiting_for, has_dependents, on_dependency_failure)
SELECT q.id, u.task_name, u.payload::jsonb, u.args::jsonb,
       CASE WHEN u.waiting_for > 0 THEN '{WAITING}' ELSE '{PENDING}' END,
       COALESCE(u.priority, q.priority, %(default_priority)s::int),
       COALESCE(u.run_at, now()), 0,
       COALESCE(u.max_attempts, q.max_attempts, %(default_max_attempts)s::int),
       u.key, true, '', now(), u.http_path, u.owner_id, u.tenant_id, %(trace)s::jsonb, u.serial_group,
       u.waiting_for, u.has_dependents, u.on_failure
FROM unnest(%(queue)s::text[], %(task_name)s::text[], %(payload)s::text[], %(args)s::text[],
            %(priority)s::int[], %(run_at)s::timestamptz[], %(max_attempts)s::int[], %(key)s::text[],
            %(http_path)s::text[], %(owner_id)s::int[], %(tenant_id)s::text[], %(serial_group)s::text[],
            %(waiting_for)s::int[], %(has_dependents)s::bool[], %(on_failure)s::text[])
     WITH ORDINALITY AS u(queue, task_name, payload, args, priority, run_at, max_attempts, key, http_path,
                          owner_id, tenant_id, serial_group, waiting_for, has_dependents, on_failure, n)
JOIN {QUEUE} q ON q.name = u.queue
ORDER BY u.n
ON CONFLICT (key) WHERE status IN ('{WAITING}', '{PENDING}') AND key IS NOT NULL DO NOTHING
RETURNING {_JOB_COLUMNS}
"""

# Marking the dependencies locks them until the dependents are committed: a
# dependency finishing meanwhile waits, then sees the mark and settles them.
# The status read here is the latest committed one, after any such wait.
_MARK_DEPENDENCIES = f"""
UPDATE {JOB} j SET has_dependents = true
FROM (SELECT id FROM {JOB} WHERE id = ANY(%(ids)s::bigint[]) ORDER BY id FOR NO KEY UPDATE) d
WHERE j.id = d.id
RETURNING j.id, j.status
"""

_INSERT_DEPENDENCIES = f"""
INSERT INTO {DEPENDENCY} (job_id, depends_on_id, position, settled)
SELECT * FROM unnest(%(job_id)s::bigint[], %(depends_on_id)s::bigint[], %(position)s::int[],
                     %(settled)s::bool[])
"""

_SETTLE_NOW = "SELECT supaqueue_settle_dependents(%(ids)s::bigint[], %(outcomes)s::text[])"

# New jobs whose stand-in dependency (see _enqueue_graph) had already succeeded.
_COUNT_DOWN = f"""
UPDATE {JOB} j SET waiting_for = j.waiting_for - d.n,
  status = CASE WHEN j.waiting_for - d.n <= 0 THEN '{PENDING}' ELSE j.status END
FROM unnest(%(ids)s::bigint[], %(n)s::int[]) AS d(id, n), {QUEUE} q
WHERE j.id = d.id AND q.id = j.queue_id AND j.status = '{WAITING}'
RETURNING CASE WHEN j.status = '{PENDING}' THEN q.name END
"""

_STATUS_OF = f"SELECT id, status, waiting_for, finished_at FROM {JOB} WHERE id = ANY(%(ids)s::bigint[])"

_PENDING_BY_KEY = f"""
SELECT {_JOB_COLUMNS} FROM {JOB}
WHERE key = ANY(%(keys)s::text[]) AND status IN ('{WAITING}', '{PENDING}')
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


def _db_alias() -> str:
    return conf.get("DATABASE")


def ensure_queues(names: Iterable[str], cursor: Any = None) -> None:
    """Create the named queues that do not exist yet, with SUPAQUEUE['QUEUES'] settings."""
    names = sorted(set(names))
    if not names:
        return
    configured = conf.get("QUEUES") or {}
    columns: dict[str, list[Any]] = {"name": names}
    for field in _QUEUE_DEFAULT_FIELDS:
        columns[field] = [(configured.get(n) or {}).get(field) for n in names]
    columns["paused"] = [bool(p) for p in columns["paused"]]
    columns["serial"] = [bool(s) for s in columns["serial"]]
    columns["head_of_line"] = [h is None or bool(h) for h in columns["head_of_line"]]
    if cursor is not None:
        cursor.execute(_ENSURE_QUEUES, columns)
        return
    with connections[_db_alias()].cursor() as cur:
        cur.execute(_ENSURE_QUEUES, columns)


def _defaults() -> dict[str, int]:
    return {
        "default_priority": check_priority(conf.get("PRIORITY")),
        "default_max_attempts": check_max_attempts(conf.get("MAX_ATTEMPTS")),
    }


def _job_from_row(
    alias: str,
    row: _Row,
    job_id: int,
    queue_id: int,
    priority: int,
    run_at: datetime,
    max_attempts: int,
    created_at: datetime,
) -> Job:
    spec = row.spec
    return Job.from_db(
        alias,
        _JOB_FIELDS,
        (
            job_id,
            queue_id,
            row.task_name,
            spec.payload,
            list(spec.args),
            PENDING,
            priority,
            run_at,
            0,
            max_attempts,
            row.key,
            True,
            None,
            "",
            created_at,
            None,
            None,
            spec.http_path,
            spec.owner_id,
            spec.tenant_id,
            json.loads(row.trace) if row.trace else None,
            spec.serial_group,
            0,
            False,
            Job.OnDependencyFailure.CANCEL,
        ),
    )


_JOB_FIELDS = [f.attname for f in Job._meta.concrete_fields]


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
    with connections[alias].cursor() as cur:
        for _ in range(5):
            cur.execute(_INSERT_ONE, params)
            got = cur.fetchone()
            if got is not None:
                return _job_from_row(alias, row, *got)
            if row.key is not None:
                cur.execute(_PENDING_BY_KEY, {"keys": [row.key]})
                existing = cur.fetchone()
                if existing is not None:
                    return _job_from_text_row(alias, existing)
            ensure_queues([row.queue], cur)
    raise RuntimeError(f"could not enqueue into queue {row.queue!r}: it keeps disappearing")


def _job_from_text_row(alias: str, values: Sequence[Any]) -> Job:
    values = list(values)
    for i in (3, 4, 12, 20):  # payload, args, result, trace_context come back as JSON text
        values[i] = None if values[i] is None else json.loads(values[i])
    return Job.from_db(alias, _JOB_FIELDS, values)


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


def _insert_many(cur: Any, alias: str, rows: list[_Row]) -> list[Job]:
    if any(r.spec.http_path or r.spec.owner_id is not None or r.spec.tenant_id is not None for r in rows):
        raise InvalidOption("http_path, owner and tenant_id are set one job at a time (enqueue_job).")
    params = _columns(rows)
    params.update(trace=rows[0].trace, **_defaults())
    cur.execute(_INSERT_MANY, params)
    return _match_written(
        cur,
        alias,
        rows,
        cur.fetchall(),
        key_of=lambda v: v[6],
        build=lambda row, v: _job_from_row(alias, row, *v[:6]),
    )


def _columns(rows: Sequence[_Row], *, extended: bool = False) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {
        "queue": [r.queue for r in rows],
        "task_name": [r.task_name for r in rows],
        "payload": [r.payload for r in rows],
        "args": [r.args for r in rows],
        "priority": [r.priority for r in rows],
        "run_at": [r.run_at for r in rows],
        "max_attempts": [r.max_attempts for r in rows],
        "key": [r.key for r in rows],
        "serial_group": [r.spec.serial_group for r in rows],
    }
    if extended:
        columns["http_path"] = [r.spec.http_path for r in rows]
        columns["owner_id"] = [r.spec.owner_id for r in rows]
        columns["tenant_id"] = [r.spec.tenant_id for r in rows]
    return columns


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


def _enqueue_graph(cur: Any, alias: str, rows: list[_Row]) -> list[Job]:
    """Write jobs with dependencies: existing jobs, or specs earlier in the same call.

    Statements: mark (and lock) the existing dependencies, insert the jobs,
    insert the edges; then, only when needed, mark the not-yet-started jobs
    that keyed specs were deduplicated to (they stand in for those specs), and
    settle dependents whose dependency has already finished.
    """
    if any(r.spec.key_mode != "dedupe" for r in rows):
        raise InvalidOption("jobs with dependencies take key_mode='dedupe' only.")
    index = {id(r.spec): n for n, r in enumerate(rows)}
    internal: list[list[int]] = []
    external: list[list[int]] = []
    for n, r in enumerate(rows):
        inside, outside = _split_dependencies(r.spec, index, n)
        internal.append(inside)
        external.append(outside)
    depended_on = {d for inside in internal for d in inside}
    status = _mark_dependencies(cur, sorted({d for outside in external for d in outside}))
    params = _columns(rows, extended=True)
    params.update(
        trace=rows[0].trace,
        waiting_for=[
            len(internal[n]) + sum(status[d] != SUCCESSFUL for d in external[n]) for n in range(len(rows))
        ],
        has_dependents=[n in depended_on for n in range(len(rows))],
        on_failure=[r.spec.on_dependency_failure or Job.OnDependencyFailure.CANCEL for r in rows],
        **_defaults(),
    )
    cur.execute(_INSERT_GRAPH, params)
    written = [_job_from_text_row(alias, v) for v in cur.fetchall()]
    jobs = _match_written(cur, alias, rows, written)
    new = {job.pk for job in written}
    # A keyed spec that met a job not started yet is that job: its dependents wait for it.
    stand_ins = sorted({jobs[d].pk for d in depended_on if jobs[d].pk not in new})
    status.update(_mark_dependencies(cur, stand_ins))
    edges: dict[str, list[Any]] = {"job_id": [], "depends_on_id": [], "position": [], "settled": []}
    early: dict[int, int] = {}  # new job -> its in-call dependencies that have already succeeded
    for n, job in enumerate(jobs):
        if job.pk not in new:
            continue  # deduplicated: the existing job keeps its own dependencies
        targets = [(jobs[d].pk, jobs[d].pk in new) for d in internal[n]] + [(d, False) for d in external[n]]
        for position, (target, fresh) in enumerate(targets, start=1):
            settled = not fresh and status[target] == SUCCESSFUL
            if settled and target in stand_ins:
                early[job.pk] = early.get(job.pk, 0) + 1
            edges["job_id"].append(job.pk)
            edges["depends_on_id"].append(target)
            edges["position"].append(position)
            edges["settled"].append(settled)
    cur.execute(_INSERT_DEPENDENCIES, edges)
    if early:
        cur.execute(_COUNT_DOWN, {"ids": list(early), "n": list(early.values())})
        notify_queues(cur, [name for (name,) in cur.fetchall()])
    finished = sorted(d for d, s in status.items() if s in (FAILED, CANCELLED))
    if finished:
        cur.execute(_SETTLE_NOW, {"ids": finished, "outcomes": [status[d] for d in finished]})
    if early or finished:
        _refresh_states(cur, jobs)
    return jobs


def _mark_dependencies(cur: Any, ids: list[int]) -> dict[int, str]:
    """Lock and mark existing jobs that new jobs will depend on; their latest statuses by id."""
    if not ids:
        return {}
    cur.execute(_MARK_DEPENDENCIES, {"ids": ids})
    status = dict(cur.fetchall())
    unknown = [d for d in ids if d not in status]
    if unknown:
        raise InvalidOption(f"depends_on names jobs that do not exist: {unknown}.")
    return status


def _refresh_states(cur: Any, jobs: list[Job]) -> None:
    """Re-read the states that settling changed after the jobs were written."""
    cur.execute(_STATUS_OF, {"ids": [j.pk for j in jobs]})
    states = {row[0]: row[1:] for row in cur.fetchall()}
    for job in jobs:
        job.status, job.waiting_for, job.finished_at = states[job.pk]


def _split_dependencies(spec: JobSpec, index: dict[int, int], n: int) -> tuple[list[int], list[int]]:
    """A spec's dependencies as (positions of earlier specs in the call, ids of existing jobs)."""
    inside: list[int] = []
    outside: list[int] = []
    for dep in spec.depends_on:
        if isinstance(dep, JobSpec):
            at = index.get(id(dep))
            if at is None or at >= n:
                raise InvalidOption(
                    "depends_on may name specs of the same call only when they come earlier in it "
                    "(use django_supaqueue.Pipeline, which orders them)."
                )
            if at not in inside:
                inside.append(at)
            continue
        if isinstance(dep, Job):
            dep = dep.pk
        if isinstance(dep, bool) or not isinstance(dep, int) or dep is None:
            raise InvalidOption(f"depends_on takes jobs or job ids, not {dep!r}.")
        if dep not in outside:
            outside.append(dep)
    return inside, outside


def _match_written(
    cur: Any,
    alias: str,
    rows: list[_Row],
    written: Sequence[Any],
    *,
    key_of: Callable[[Any], str | None] = lambda job: job.key,
    build: Callable[[_Row, Any], Job] = lambda row, job: job,
) -> list[Job]:
    """Pair each spec with the job written for it, or with the pending job that holds its key.

    ``written`` comes back in the specs' order, less the keyed specs that lost
    to a pending job (ON CONFLICT DO NOTHING); those are read in one more statement.
    """
    jobs: list[Job | None] = []
    it = iter(written)
    nxt = next(it, None)
    for r in rows:
        if nxt is not None and key_of(nxt) == r.key:
            jobs.append(build(r, nxt))
            nxt = next(it, None)
        else:
            jobs.append(None)
    missing = [r.key for r, j in zip(rows, jobs, strict=True) if j is None]
    if missing:
        cur.execute(_PENDING_BY_KEY, {"keys": missing})
        by_key = {v[10]: _job_from_text_row(alias, v) for v in cur.fetchall()}
        jobs = [j if j is not None else by_key[r.key] for r, j in zip(rows, jobs, strict=True)]
    return jobs  # type: ignore[return-value]


# --------------------------------------------------------------------------
# Producer side, in the database: the opt-in trigger that enqueues row changes
# --------------------------------------------------------------------------

#: The one trigger function every job trigger calls; its arguments say what to enqueue.
ROW_TRIGGER_FUNCTION = "supaqueue_enqueue_changed_rows"
#: The events a job trigger can fire on, and the transition tables each one reads.
_TRIGGER_REFERENCING = {
    "insert": "REFERENCING NEW TABLE AS supaqueue_new_rows",
    "update": "REFERENCING OLD TABLE AS supaqueue_old_rows NEW TABLE AS supaqueue_new_rows",
    "delete": "REFERENCING OLD TABLE AS supaqueue_old_rows",
}
TRIGGER_EVENTS = tuple(_TRIGGER_REFERENCING)

# One statement-level trigger per event (transition tables allow one event per
# trigger), so an UPDATE of 10,000 rows costs one INSERT of 10,000 jobs and one
# NOTIFY. Rows become JSON with to_jsonb(); column names and options arrive as
# TG_ARGV values, so nothing here is ever built from a row's values: they are
# data from end to end. TG_ARGV: 0 task name, 1 queue, 2 priority and 3 max
# attempts ('' = the queue's, else 4 and 5, the settings when installed),
# 6 payload kind ('row' or 'keys'), 7 primary-key column, 8 n, the number of
# "changed" columns that follow (9 .. 8+n), then (payload key, column) pairs.
_CREATE_ROW_TRIGGER_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {ROW_TRIGGER_FUNCTION}() RETURNS trigger
LANGUAGE plpgsql AS $supaqueue$
DECLARE
  task_name text := TG_ARGV[0];
  queue_name text := TG_ARGV[1];
  job_priority int := NULLIF(TG_ARGV[2], '')::int;
  job_max_attempts int := NULLIF(TG_ARGV[3], '')::int;
  default_priority int := TG_ARGV[4]::int;
  default_max_attempts int := TG_ARGV[5]::int;
  whole_row boolean := TG_ARGV[6] = 'row';
  pk_column text := TG_ARGV[7];
  n_changed int := TG_ARGV[8]::int;
  changed text[] := TG_ARGV[9:8 + n_changed];
  pairs text[] := TG_ARGV[9 + n_changed:];
  changed_rows jsonb[];
BEGIN
  IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND n_changed = 0) THEN
    SELECT array_agg(to_jsonb(n)) INTO changed_rows FROM supaqueue_new_rows n;
  ELSIF TG_OP = 'DELETE' THEN
    SELECT array_agg(to_jsonb(o)) INTO changed_rows FROM supaqueue_old_rows o;
  ELSE
    SELECT array_agg(n.r) INTO changed_rows
    FROM (SELECT to_jsonb(n) AS r FROM supaqueue_new_rows n) n
    JOIN (SELECT to_jsonb(o) AS r FROM supaqueue_old_rows o) o ON o.r -> pk_column = n.r -> pk_column
    WHERE EXISTS (SELECT 1 FROM unnest(changed) AS c(col) WHERE o.r -> c.col IS DISTINCT FROM n.r -> c.col);
  END IF;
  IF changed_rows IS NULL THEN
    RETURN NULL;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM {QUEUE} WHERE name = queue_name) THEN
    INSERT INTO {QUEUE} (name) VALUES (queue_name) ON CONFLICT (name) DO NOTHING;
  END IF;
  INSERT INTO {JOB} (queue_id, task_name, payload, args, status, priority, run_at, attempts,
                     max_attempts, key, enabled, last_error, created_at)
  SELECT q.id, task_name,
         CASE WHEN whole_row THEN jsonb_build_object('row', u.r)
              ELSE (SELECT COALESCE(jsonb_object_agg(pairs[i], COALESCE(u.r -> pairs[i + 1], 'null')),
                                    '{{}}'::jsonb)
                    FROM generate_series(1, COALESCE(array_length(pairs, 1), 0), 2) AS i) END,
         '[]'::jsonb, '{PENDING}',
         COALESCE(job_priority, q.priority, default_priority), now(), 0,
         COALESCE(job_max_attempts, q.max_attempts, default_max_attempts), NULL, true, '', now()
  FROM unnest(changed_rows) WITH ORDINALITY AS u(r, n)
  JOIN {QUEUE} q ON q.name = queue_name
  ORDER BY u.n;
  RETURN NULL;
END
$supaqueue$
"""

_TABLES_EXIST = f"SELECT to_regclass('{JOB}') IS NOT NULL AND to_regclass('{QUEUE}') IS NOT NULL"


@dataclasses.dataclass(frozen=True)
class RowTrigger:
    """A job trigger as it is installed: which table, which events, what each job gets.

    ``payload`` is ``"row"`` (one keyword argument ``row``, the whole row) or a
    sequence of (keyword, column) pairs; ``changed`` limits updates to rows in
    which one of those columns changed.
    """

    table: str
    name: str
    events: tuple[str, ...]
    task_name: str
    queue: str
    payload: str | tuple[tuple[str, str], ...]
    pk_column: str
    changed: tuple[str, ...] = ()
    priority: int | None = None
    max_attempts: int | None = None

    def trigger_names(self) -> list[str]:
        return [f"{self.name}_{event}" for event in self.events]

    def arguments(self) -> list[str]:
        defaults = _defaults()
        pairs = [] if self.payload == "row" else [part for pair in self.payload for part in pair]
        return [
            self.task_name,
            check_queue_name(self.queue),
            "" if self.priority is None else str(check_priority(self.priority)),
            "" if self.max_attempts is None else str(check_max_attempts(self.max_attempts)),
            str(defaults["default_priority"]),
            str(defaults["default_max_attempts"]),
            "row" if self.payload == "row" else "keys",
            self.pk_column,
            str(len(self.changed)),
            *self.changed,
            *pairs,
        ]


def install_row_trigger(cursor: Any, trigger: RowTrigger) -> None:
    """Create the trigger function (or replace it with this version) and the trigger's triggers.

    Runs on a Django cursor (a migration's schema editor); the queue the jobs go
    to is created now, with its SUPAQUEUE['QUEUES'] settings.
    """
    from psycopg import sql

    cursor.execute(_TABLES_EXIST)
    if not cursor.fetchone()[0]:
        from .exceptions import TriggerConfigError

        raise TriggerConfigError(
            f"Job trigger {trigger.name!r} needs the supaqueue tables: add ('supaqueue', '0001_initial') "
            "(or a later supaqueue migration) to the dependencies of the migration that installs it."
        )
    arguments = trigger.arguments()
    ensure_queues([trigger.queue], cursor)
    cursor.execute(_CREATE_ROW_TRIGGER_FUNCTION)
    for event, name in zip(trigger.events, trigger.trigger_names(), strict=True):
        statement = sql.SQL(
            "CREATE TRIGGER {name} AFTER {event} ON {table} {referencing} "
            "FOR EACH STATEMENT EXECUTE FUNCTION {function}({arguments})"
        ).format(
            name=sql.Identifier(name),
            event=sql.SQL(event.upper()),
            table=sql.Identifier(trigger.table),
            referencing=sql.SQL(_TRIGGER_REFERENCING[event]),
            function=sql.Identifier(ROW_TRIGGER_FUNCTION),
            arguments=sql.SQL(", ").join(sql.Literal(a) for a in arguments),
        )
        cursor.execute(statement.as_string(cursor.cursor))


def drop_row_trigger(cursor: Any, trigger: RowTrigger) -> None:
    """Drop the trigger's triggers; the shared function stays for the other job triggers."""
    from psycopg import sql

    for name in trigger.trigger_names():
        statement = sql.SQL("DROP TRIGGER IF EXISTS {name} ON {table}").format(
            name=sql.Identifier(name), table=sql.Identifier(trigger.table)
        )
        cursor.execute(statement.as_string(cursor.cursor))


# --------------------------------------------------------------------------
# Worker side (the worker's own psycopg connection)
# --------------------------------------------------------------------------


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


@dataclasses.dataclass(slots=True)
class Retry:
    """What became of a failed attempt: pending again at run_at, or failed for good."""

    job_id: int
    status: str
    run_at: datetime


_REGISTER_WORKER = f"""
INSERT INTO {WORKER} (name, host, pid, queues, concurrency, started_at, last_heartbeat_at)
VALUES (%(name)s, %(host)s, %(pid)s, %(queues)s::jsonb, %(concurrency)s, now(), now())
RETURNING id
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
  WHERE c.worker_id IN (SELECT id FROM w) AND c.job_id = h.job_id AND c.attempt = h.attempt
  RETURNING 1
)
SELECT (SELECT count(*) FROM w), (SELECT count(*) FROM renewed)
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
# key check holds KEY SHARE on the same row.
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
         ELSE %(free)s::int END,
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
# deployments without serial work never send it.
_RATE_WAKE = f"""
SELECT extract(epoch FROM min(w.next))::float8,
       EXISTS (SELECT 1 FROM {QUEUE} s WHERE s.serial AND NOT s.paused
               AND (%(queues)s::text[] IS NULL OR s.name = ANY(%(queues)s::text[])))
       OR ({_ANY_GROUP}) IS NOT NULL
FROM (
  SELECT (SELECT x.at FROM {CALL} x WHERE x.queue_id = q.id ORDER BY x.at DESC
          OFFSET q.rate_limit - 1 LIMIT 1) + (q.rate_period + %(rate_margin)s) * interval '1 second' AS next
  FROM {QUEUE} q, LATERAL (
    SELECT 1 FROM {JOB} j WHERE j.queue_id = q.id AND j.status = '{PENDING}' AND j.enabled
      AND j.run_at <= now() LIMIT 1) due
  WHERE q.rate_limit IS NOT NULL AND NOT q.paused
    AND (%(queues)s::text[] IS NULL OR q.name = ANY(%(queues)s::text[]))
) w WHERE w.next > clock_timestamp()
"""


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
  FROM lease WHERE j.id = lease.job_id
  RETURNING j.id, j.has_dependents
), settled AS (
  {_settle("done", "'successful'", "has_dependents")}
), event AS (
  INSERT INTO {EVENT} (job_id, kind, attempt, worker_name, at, duration, error_class,
                       error_message, traceback, http_status)
  SELECT job_id, 'succeeded', attempt, %(worker_name)s, now(), duration, '', '', '', http_status
  FROM lease
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
  WHERE j.id = l.job_id AND q.id = j.queue_id
  RETURNING j.id, j.status, j.run_at, l.attempt, l.worker_name, l.duration, l.error_class,
            l.error_message, l.traceback, l.http_status, j.has_dependents
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
  SELECT c.id FROM {CURRENT} c WHERE c.lease_expires_at < now()
  ORDER BY c.id LIMIT %(limit)s FOR UPDATE SKIP LOCKED
), lease AS (
  DELETE FROM {CURRENT} c USING expired, {WORKER} w
  WHERE c.id = expired.id AND w.id = c.worker_id
  RETURNING c.job_id, c.attempt, 'WorkerLost'::text AS error_class,
    'worker ' || w.name || ' stopped renewing its lease (last heartbeat '
      || to_char(w.last_heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC)'
      AS error_message,
    ''::text AS traceback, extract(epoch FROM now() - c.started_at)::float8 AS duration,
    NULL::timestamptz AS retry_at, NULL::float8 AS backoff, NULL::float8 AS backoff_max,
    false AS final, NULL::int AS http_status, false AS uncounted, w.name AS worker_name
)"""
    + _RESOLVE_FAILURES
)

_DELETE_STALE_WORKERS = f"""
DELETE FROM {WORKER} w
WHERE w.last_heartbeat_at < now() - %(stale)s * interval '1 second'
  AND NOT EXISTS (SELECT 1 FROM {CURRENT} c WHERE c.worker_id = w.id)
"""


_CANCEL = f"""
WITH target AS (
  SELECT id FROM {JOB}
  WHERE id = ANY(%(job_id)s::bigint[]) AND status IN ('{WAITING}', '{PENDING}', '{IN_PROGRESS}')
  ORDER BY id FOR UPDATE
), lease AS (
  DELETE FROM {CURRENT} c USING target WHERE c.job_id = target.id RETURNING c.job_id, c.attempt
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

    A pending job will never run. A running attempt loses its lease (so its
    result can never be written) and its worker is told to stop it, the way a
    timeout stops it. Finished jobs are left alone.
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


_RELEASE = f"""
WITH d AS (
  SELECT * FROM unnest(%(job_id)s::bigint[], %(attempt)s::int[]) AS d(job_id, attempt)
), lease AS (
  DELETE FROM {CURRENT} c USING d
  WHERE c.job_id = d.job_id AND c.attempt = d.attempt AND c.worker_id = %(worker_id)s
  RETURNING c.job_id, c.attempt, c.started_at
), upd AS (
  UPDATE {JOB} j SET status = '{PENDING}', run_at = LEAST(j.run_at, now()),
    attempts = GREATEST(j.attempts - 1, 0),
    key = {_KEY_UNLESS_TAKEN}
  FROM lease WHERE j.id = lease.job_id
  RETURNING j.id
), event AS (
  INSERT INTO {EVENT} (job_id, kind, attempt, worker_name, at, duration, error_class, error_message,
                       traceback)
  SELECT job_id, 'released', attempt, %(worker_name)s, now(),
         extract(epoch FROM now() - started_at)::float8, '',
         'the worker stopped before the attempt finished', ''
  FROM lease
)
SELECT id FROM upd
"""


def release(conn: Any, *, worker_id: int, worker_name: str, held: Sequence[tuple[int, int]]) -> list[int]:
    """Give back attempts a stopping worker will not finish: pending again now, the attempt not counted.

    The job keeps its run_at, so it keeps its place in line (a serial queue runs it next).
    """
    if not held:
        return []
    params = {
        "job_id": [h[0] for h in held],
        "attempt": [h[1] for h in held],
        "worker_id": worker_id,
        "worker_name": worker_name,
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


def register_worker(
    conn: Any, *, name: str, host: str, pid: int, queues: Sequence[str] | None, concurrency: int
) -> int:
    """Insert this process's Worker row and return its id."""
    return conn.execute(
        _REGISTER_WORKER,
        {
            "name": name,
            "host": host,
            "pid": pid,
            "queues": json.dumps(list(queues or [])),
            "concurrency": concurrency,
        },
    ).fetchone()[0]


def unregister_worker(conn: Any, worker_id: int) -> None:
    """Remove the Worker row, unless it still holds leases (then recovery handles them)."""
    conn.execute(_UNREGISTER_WORKER, {"worker_id": worker_id})


def heartbeat(conn: Any, worker_id: int, lease_seconds: float, held: Sequence[tuple[int, int]]) -> bool:
    """Renew the leases of the attempts this worker is running; False when its row is gone.

    Only attempts the worker knows it runs are renewed: a lease whose claim
    committed while the connection died was never dispatched, and must expire.
    """
    alive, _renewed = conn.execute(
        _HEARTBEAT,
        {
            "worker_id": worker_id,
            "lease": lease_seconds,
            "job_id": [h[0] for h in held],
            "attempt": [h[1] for h in held],
        },
    ).fetchone()
    return bool(alive)


def _claim_params(
    worker_id: int,
    worker_name: str,
    queues: Sequence[str] | None,
    limit: int,
    lease_seconds: float,
    job_ids: Sequence[int] | None = None,
    free: int | None = None,
) -> dict[str, Any]:
    return {
        "queues": list(queues) if queues else None,
        "limit": limit,
        "free": limit if free is None else min(free, limit),
        "worker_id": worker_id,
        "worker_name": worker_name,
        "lease": lease_seconds,
        "rate_margin": float(conf.get("RATE_LIMIT_MARGIN")),
        "job_ids": list(job_ids) if job_ids is not None else None,
    }


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


def complete(conn: Any, *, worker_id: int, worker_name: str, successes: Sequence[Success]) -> set[int]:
    """Record successful attempts; returns the ids whose lease still matched (the others were fenced)."""
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
) -> tuple[list[Retry], list[ClaimedJob], float | None, bool]:
    """The worker's round trip: record finished attempts, wake capped queues, claim new jobs.

    One transaction, sent as one pipeline: the statements of complete(),
    fail(), notify_queues() and claim() go to the server together, so a cycle
    of the claim loop costs one network round trip and one commit. Serial
    groups whose job ended wake the workers of every queue holding their
    next jobs (a group spans queues). The third
    value is when a rate-limited queue with due jobs has room again (epoch
    seconds), or None; the fourth whether the next call needs ``serial``
    (serial queues or groups have work; True when nothing was claimed, to be safe).
    ``serial=False`` leaves out the claim of serial queues and groups. ``free`` is
    how many of ``limit`` are idle slots (see _CLAIM_ROOM).
    """
    failed = claimed = claimed_serial = wake = None
    freed = sorted(set(freed_queues))
    groups = sorted(set(freed_groups))
    with conn.pipeline(), conn.transaction():
        if successes:
            conn.execute(_COMPLETE, _complete_params(worker_id, worker_name, successes))
        if failures:
            failed = conn.execute(_FAIL, _fail_params(worker_id, worker_name, failures))
        if freed:
            conn.execute(_NOTIFY_QUEUES, {"names": freed})
        if groups:
            conn.execute(_NOTIFY_GROUPS, {"groups": groups})
        if limit > 0:
            params = _claim_params(worker_id, worker_name, queues, limit, lease_seconds, free=free)
            conn.execute(_LOCK_CAPPED_QUEUES, params)
            if serial:
                claimed_serial = conn.execute(_CLAIM_SERIAL, params)
            claimed = conn.execute(_CLAIM, params)
            wake = conn.execute(_RATE_WAKE, params)
    retries = [Retry(*r) for r in failed.fetchall()] if failed is not None else []
    rows = claimed_serial.fetchall() if claimed_serial is not None else []
    rows += claimed.fetchall() if claimed is not None else []
    received = time.monotonic()
    jobs = [ClaimedJob(*r, received=received) for r in rows]
    rate_wake, serial_work = wake.fetchone() if wake is not None else (None, True)
    return retries, jobs, rate_wake, serial_work


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


# --------------------------------------------------------------------------
# Operator actions (the admin's buttons; Django's connection)
#
# Each takes job ids, acts on the ones in a state the action applies to, writes
# one event per job it changed (the reason, e.g. who asked, in error_message),
# and returns the ids it changed, so that a caller can work through any number
# of jobs in batches. Jobs that become runnable wake their queues' workers.
# --------------------------------------------------------------------------


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

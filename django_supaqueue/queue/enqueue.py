"""The producer side: writing jobs, one at a time or many, with keys (Django's connection)."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from django.db import connections, transaction

from .. import conf, tracing
from ..exceptions import InvalidOption
from ..models import Job
from . import prepared, queries
from .graph import enqueue_graph
from .rows import (
    as_columns,
    holding_keys,
    job_from_row,
    job_from_text_row,
    job_with,
    jobs_with,
    match_written,
    queue_defaults,
    shared_values,
)
from .spec import JobSpec, Row, check_key, check_tenant_id, payload_texts
from .tables import db_alias

SQL = queries.load("enqueue.sql")

#: What leaves out a job whose key a job not started yet holds. Jobs without keys meet no
#: conflict, and without the clause each row skips the speculative insertion it costs (a
#: lock taken and released per row): a tenth of the server's time for 20,000 jobs.
KEY_HELD = "ON CONFLICT (key) WHERE status IN ('waiting', 'pending') AND key IS NOT NULL DO NOTHING"
_UNKEYED = {name: queries.without(SQL[name], KEY_HELD) for name in ("insert_batch", "insert_many")}

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
    "rate_limit",
    "rate_period",
    "limit_scope",
    "execution_mode",
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
    settings["rate_period"] = 1.0 if settings["rate_period"] is None else float(settings["rate_period"])
    settings["limit_scope"] = settings["limit_scope"] or "queue"
    settings["execution_mode"] = settings["execution_mode"] or "threads"
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
        cursor.execute(SQL["ensure_queues"], columns)
        return
    with connections[db_alias()].cursor() as cur:
        cur.execute(SQL["ensure_queues"], columns)


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
    alias = db_alias()
    params = {
        "trace": row.trace,
        "task_name": row.task_name,
        "payload": row.payload,
        "args": row.args,
        "queue": row.queue,
        "priority": row.priority,
        "run_at": row.run_at,
        "run_in": row.run_in,
        "max_attempts": row.max_attempts,
        "key": row.key,
        "http_path": spec.http_path,
        "http_method": spec.http_method,
        "owner_id": spec.owner_id,
        "tenant_id": spec.tenant_id,
        "serial_group": spec.serial_group,
        **queue_defaults(),
    }
    job = _insert_one(alias, row, params)
    if after_enqueue is not None:
        after_enqueue([job])
    return job


def _insert_one(alias: str, row: Row, params: dict[str, Any]) -> Job:
    got = prepared.fetch_row(alias, "supaqueue_enqueue", SQL["insert_one"], params)
    if got is not None:
        return job_from_row(alias, row, *got)
    with connections[alias].cursor() as cur:
        for _ in range(5):
            if row.key is not None:
                existing = holding_keys(cur, alias, [row.key])
                if existing:
                    return existing[0]
            ensure_queues([row.queue], cur)
            cur.execute(SQL["insert_one"], params)
            got = cur.fetchone()
            if got is not None:
                return job_from_row(alias, row, *got)
    raise RuntimeError(f"could not enqueue into queue {row.queue!r}: it keeps disappearing")


def enqueue_jobs(specs: Sequence[JobSpec]) -> list[Job]:
    """Write many jobs in at most four statements, atomically.

    1. create missing queues; 2. insert every job with one INSERT … SELECT
    FROM unnest(); 3. (only when keys collided) read the pending jobs that won.
    Specs with dependencies or a key mode other than "dedupe" take their own
    paths (graph.enqueue_graph, _upsert), a few statements more.
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
    alias = db_alias()
    with transaction.atomic(using=alias, savepoint=False), connections[alias].cursor() as cur:
        ensure_queues({r.queue for r in rows}, cur)
        if any(r.spec.depends_on for r in rows):
            jobs = enqueue_graph(cur, alias, rows)
        elif modes != {"dedupe"}:
            jobs = _upsert(cur, alias, rows)
        else:
            jobs = _insert_many(cur, alias, rows)
    if after_enqueue is not None:
        after_enqueue(jobs)
    return jobs


def enqueue_batch(
    template: JobSpec,
    payloads: Sequence[dict[str, Any]],
    keys: Sequence[str | None],
    tenants: Sequence[str | None] | None = None,
) -> list[Job]:
    """Many jobs of one task (or HTTP queue and path) with one set of options: enqueue_jobs, leaner.

    The options are checked once, not once per job, and rows go to the
    statement as columns without a JobSpec each: at 20,000 jobs the per-job
    objects cost as much as writing the rows. ``tenants`` gives each job its
    tenant (None: the template's for all). Dependencies, a key mode other than
    "dedupe" or more than one tenant take enqueue_jobs' paths, as many
    statements whatever the number of jobs.
    """
    mixed = tenants is not None and len({check_tenant_id(t) for t in tenants}) > 1
    if template.depends_on or template.key_mode != "dedupe" or mixed:
        tenants = [template.tenant_id] * len(payloads) if tenants is None else tenants
        return enqueue_jobs(
            [
                dataclasses.replace(template, payload=p, key=k, tenant_id=t)
                for p, k, t in zip(payloads, keys, tenants, strict=True)
            ]
        )
    if tenants:
        template = dataclasses.replace(template, tenant_id=tenants[0])
    base = template.validated()
    if not payloads:
        return []
    with _collector_paused():
        jobs = _write_batch(template, base, payloads, keys)
    if after_enqueue is not None:
        after_enqueue(jobs)
    return jobs


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector while a batch's Jobs are built.

    Tens of thousands of new objects that stay alive set off collections that
    walk every object of the process (a Django project has many), a sixth of a
    20,000-job call; the Jobs hold no cycles, so nothing is left for later.
    """
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def _write_batch(
    template: JobSpec, base: Row, payloads: Sequence[dict[str, Any]], keys: Sequence[str | None]
) -> list[Job]:
    """enqueue_batch's write: the payloads' texts, one statement, the Jobs (see insert_batch)."""
    encoded = payload_texts(payloads)
    keyed = any(k is not None for k in keys)
    if keyed:
        for key in keys:
            check_key(key)
    params = {
        "queue": base.queue,
        "task_name": base.task_name,
        "payload": encoded,
        "args": base.args,
        "priority": base.priority,
        "run_at": base.run_at,
        "run_in": base.run_in,
        "max_attempts": base.max_attempts,
        "key": list(keys) if keyed else None,  # unnest() pads a NULL array with NULLs
        "serial_group": template.serial_group,
        "tenant_id": template.tenant_id,
        "http_path": template.http_path,
        "http_method": template.http_method,
        "owner_id": template.owner_id,
        "trace": tracing.current_context_json(),
        **queue_defaults(),
    }
    alias = db_alias()
    with transaction.atomic(using=alias, savepoint=False), connections[alias].cursor() as cur:
        ensure_queues([base.queue], cur)
        statement = SQL["insert_batch"] if keyed else _UNKEYED["insert_batch"]
        written = prepared.execute(alias, statement, params, binary=True).fetchone()
        base.trace = params["trace"]
        return _batch_jobs(cur, alias, base, payloads, keys, written)


def _batch_jobs(
    cur: Any,
    alias: str,
    base: Row,
    payloads: Sequence[dict[str, Any]],
    keys: Sequence[str | None],
    written: Sequence[Any],
) -> list[Job]:
    """The Job of each payload, built from the values every job of the call shares (see insert_batch)."""
    ids, written_keys, queue_id, priority, run_at, max_attempts, created_at = written
    shared = shared_values(alias, base)
    shared.update(
        queue_id=queue_id, priority=priority, run_at=run_at, max_attempts=max_attempts, created_at=created_at
    )
    if ids and len(ids) == len(payloads):  # no key was held already: every payload has its row
        return jobs_with(alias, shared, ids, payloads, keys)
    rows = list(zip(ids or (), written_keys or itertools.repeat(None), strict=False))

    def build(n: int, row: tuple[int, str | None]) -> Job:
        return job_with(alias, shared, id=row[0], payload=payloads[n], key=row[1])

    return match_written(cur, alias, keys, rows, key_of=lambda v: v[1], build=build)


def _insert_many(cur: Any, alias: str, rows: list[Row]) -> list[Job]:
    if any(r.spec.http_path or r.spec.http_method or r.spec.owner_id is not None for r in rows):
        raise InvalidOption("http_path, http_method and owner are set one job at a time (enqueue_job).")
    params = as_columns(rows)
    params.update(trace=rows[0].trace, **queue_defaults())
    keyed = any(r.key is not None for r in rows)
    statement = SQL["insert_many"] if keyed else _UNKEYED["insert_many"]
    written = prepared.execute(alias, statement, params).fetchall()
    return match_written(
        cur,
        alias,
        [r.key for r in rows],
        written,
        key_of=lambda v: v[6],
        build=lambda n, v: job_from_row(alias, rows[n], *v[:6]),
    )


def _upsert(cur: Any, alias: str, rows: list[Row]) -> list[Job]:
    """The "replace" and "preserve_run_at" key modes: one upsert, the last call per key winning.

    A key that appears twice in one call is written once (an upsert may not
    touch a row twice); every spec of that key gets the same job back. A
    pending job claimed while the upsert waited on its lock has left the key's
    index by then, so the statement inserts a new job instead.
    """
    last: dict[str | None, Row] = {}
    for r in rows:
        last.pop(r.key, None)
        last[r.key] = r
    unique = list(last.values())
    params = as_columns(unique, extended=True)
    params.update(trace=rows[0].trace, key_mode=rows[0].spec.key_mode, **queue_defaults())
    cur.execute(SQL["upsert"], params)
    by_key = {job.key: job for job in (job_from_text_row(alias, v) for v in cur.fetchall())}
    return [by_key[r.key] for r in rows]

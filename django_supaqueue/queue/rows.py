"""Job rows as the enqueue statements write and return them, and the queue defaults they fill in.

Shared by the modules that write jobs (enqueue, graph, triggers); its one
statement is in rows.sql.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from django.db.models.base import ModelState

from .. import conf
from ..models import Job
from . import queries
from .spec import Row, check_max_attempts, check_priority

SQL = queries.load("rows.sql")


def queue_defaults() -> dict[str, int]:
    """The defaults a job gets where neither the call nor its queue sets them (SUPAQUEUE settings)."""
    return {
        "default_priority": check_priority(conf.get("PRIORITY")),
        "default_max_attempts": check_max_attempts(conf.get("MAX_ATTEMPTS")),
    }


def job_from_row(
    alias: str,
    row: Row,
    job_id: int,
    queue_id: int,
    priority: int,
    run_at: datetime,
    max_attempts: int,
    created_at: datetime,
) -> Job:
    """The Job a fresh insert wrote for ``row``, from the values the database filled in."""
    spec = row.spec
    return _job(
        alias,
        (
            job_id,
            queue_id,
            row.task_name,
            spec.payload,
            list(spec.args),
            Job.Status.PENDING.value,
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
            spec.http_method,
        ),
    )


_JOB_FIELDS = [f.attname for f in Job._meta.concrete_fields]


def shared_values(alias: str, row: Row) -> dict[str, Any]:
    """The field values every job of an enqueue_many call shares (a fresh job's state included)."""
    template = job_from_row(alias, row, None, None, None, None, None, None)
    return {field: template.__dict__[field] for field in _JOB_FIELDS}


def job_with(alias: str, shared: dict[str, Any], **fields: Any) -> Job:
    """A Job from the shared values and this job's own, built as _job builds one (see there)."""
    values = shared.copy()
    values.update(fields)
    return _instance(alias, values)


def jobs_with(
    alias: str,
    shared: dict[str, Any],
    ids: Sequence[int],
    payloads: Sequence[Any],
    keys: Sequence[str | None],
) -> list[Job]:
    """job_with for each job of an enqueue_many call that wrote them all, without keywords per job."""
    jobs = []
    for id_, payload, key in zip(ids, payloads, keys, strict=True):
        values = shared.copy()
        values["id"] = id_
        values["payload"] = payload
        values["key"] = key
        jobs.append(_instance(alias, values))
    return jobs


def _job(alias: str, values: Sequence[Any]) -> Job:
    """A Job from a full row of values, as Model.from_db would build it, without Model.__init__.

    Building 20,000 instances for enqueue_many took longer than writing the
    rows; every concrete field is given (nothing is deferred), so the instance
    is the same, except that pre_init/post_init are not sent for it.
    """
    return _instance(alias, dict(zip(_JOB_FIELDS, values, strict=True)))


def _instance(alias: str, values: dict[str, Any]) -> Job:
    """A Job whose __dict__ is ``values`` (every concrete field), loaded from ``alias``."""
    state = ModelState()
    state.adding = False
    state.db = alias
    values["_state"] = state
    job = Job.__new__(Job)
    job.__dict__ = values
    return job


def job_from_text_row(alias: str, values: Sequence[Any]) -> Job:
    """A Job from a whole row as the statements returning whole jobs return it (see rows.sql)."""
    values = list(values)
    for i in (3, 4, 12, 20):  # payload, args, result, trace_context come back as JSON text
        values[i] = None if values[i] is None else json.loads(values[i])
    return _job(alias, values)


def as_columns(rows: Sequence[Row], *, extended: bool = False) -> dict[str, list[Any]]:
    """The rows as one list of values per column, the arrays the statements unnest."""
    columns: dict[str, list[Any]] = {
        "queue": [r.queue for r in rows],
        "task_name": [r.task_name for r in rows],
        "payload": [r.payload for r in rows],
        "args": [r.args for r in rows],
        "priority": [r.priority for r in rows],
        "run_at": [r.run_at for r in rows],
        "run_in": [r.run_in for r in rows],
        "max_attempts": [r.max_attempts for r in rows],
        "key": [r.key for r in rows],
        "serial_group": [r.spec.serial_group for r in rows],
        "tenant_id": [r.spec.tenant_id for r in rows],
    }
    if extended:
        columns["http_path"] = [r.spec.http_path for r in rows]
        columns["http_method"] = [r.spec.http_method for r in rows]
        columns["owner_id"] = [r.spec.owner_id for r in rows]
    return columns


def match_written(
    cur: Any,
    alias: str,
    keys: Sequence[str | None],
    written: Sequence[Any],
    *,
    key_of: Callable[[Any], str | None] = lambda job: job.key,
    build: Callable[[int, Any], Job] = lambda n, job: job,
) -> list[Job]:
    """Pair each spec (given by its key) with the job written for it, or the job that holds its key.

    ``written`` comes back in the specs' order, less the keyed specs that lost
    to a job not started yet (ON CONFLICT DO NOTHING); those are read in one
    more statement. ``build(n, value)`` makes the nth spec's Job from its row.
    """
    jobs: list[Job | None] = []
    it = iter(written)
    nxt = next(it, None)
    for n, key in enumerate(keys):
        if nxt is not None and key_of(nxt) == key:
            jobs.append(build(n, nxt))
            nxt = next(it, None)
        else:
            jobs.append(None)
    missing = [k for k, j in zip(keys, jobs, strict=True) if j is None]
    if missing:
        by_key = {job.key: job for job in holding_keys(cur, alias, missing)}
        jobs = [j if j is not None else by_key[k] for k, j in zip(keys, jobs, strict=True)]
    return jobs  # type: ignore[return-value]


def holding_keys(cur: Any, alias: str, keys: Sequence[str | None]) -> list[Job]:
    """The jobs not started yet (waiting or pending) that hold these keys."""
    cur.execute(SQL["pending_by_key"], {"keys": list(keys)})
    return [job_from_text_row(alias, v) for v in cur.fetchall()]

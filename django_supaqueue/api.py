"""The public calls behind ``from django_supaqueue import enqueue, …, cancel, reschedule``.

Thin doors: a job is written and announced by ``producer.produce``, a
cancellation by the queue package and announced here, so that the queue
package itself stays free of everything but SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from . import queue as q
from . import signals
from .models import Job
from .producer import produce
from .tasks import get_task


def enqueue(
    task_name: str,
    payload: Mapping[str, Any] | None = None,
    *,
    args: Sequence[Any] = (),
    queue: str | None = None,
    priority: int | None = None,
    run_at: datetime | timedelta | None = None,
    key: str | None = None,
    max_attempts: int | None = None,
    key_mode: str | None = None,
    depends_on: Sequence[Job | int] | None = None,
    on_dependency_failure: str | None = None,
    serial_group: str | None = None,
    tenant_id: str | None = None,
) -> Job:
    """Enqueue a registered task by name: ``enqueue("app.tasks.f", {"x": 1}, queue="q")``.

    ``tenant_id`` says whose job it is (@pgpm/jobs' ``database_id``).
    """
    return get_task(task_name).enqueue(
        *args,
        queue=queue,
        priority=priority,
        run_at=run_at,
        key=key,
        max_attempts=max_attempts,
        key_mode=key_mode,
        depends_on=depends_on,
        on_dependency_failure=on_dependency_failure,
        serial_group=serial_group,
        tenant_id=tenant_id,
        **dict(payload or {}),
    )


def enqueue_many(
    task_name: str,
    payloads: Iterable[Mapping[str, Any]],
    *,
    queue: str | None = None,
    priority: int | None = None,
    run_at: datetime | timedelta | None = None,
    max_attempts: int | None = None,
    key_mode: str | None = None,
    depends_on: Sequence[Job | int] | None = None,
    on_dependency_failure: str | None = None,
    serial_group: str | None = None,
    tenant_id: str | None = None,
) -> list[Job]:
    """Enqueue one job per payload in a constant number of statements; all or nothing.

    A payload may carry a ``key``, and a ``tenant_id`` of its own instead of the call's;
    ``key_mode`` applies to all of them.
    """
    return get_task(task_name).enqueue_many(
        payloads,
        queue=queue,
        priority=priority,
        run_at=run_at,
        max_attempts=max_attempts,
        key_mode=key_mode,
        depends_on=depends_on,
        on_dependency_failure=on_dependency_failure,
        serial_group=serial_group,
        tenant_id=tenant_id,
    )


def enqueue_http(
    queue: str,
    payload: Mapping[str, Any] | None = None,
    path: str | None = None,
    method: str | None = None,
    *,
    priority: int | None = None,
    run_at: datetime | timedelta | None = None,
    key: str | None = None,
    max_attempts: int | None = None,
    owner: Any = None,
    tenant_id: str | None = None,
    key_mode: str = "dedupe",
    depends_on: Sequence[Job | int] = (),
    on_dependency_failure: str | None = None,
) -> Job:
    """Enqueue one call to the HTTP queue ``queue``: ``enqueue_http("hooks", {"id": 1}, path="orders")``.

    ``method`` (GET, POST, PUT, PATCH or DELETE) is this call's; None: the queue's when the call is made.
    """
    from .handlers.http import http_job_spec  # not at import: a process without HTTP queues skips httpx

    spec = http_job_spec(
        queue,
        payload,
        path,
        method=method,
        priority=priority,
        run_at=run_at,
        key=key,
        max_attempts=max_attempts,
        owner=owner,
        tenant_id=tenant_id,
        key_mode=key_mode,
        depends_on=depends_on,
        on_dependency_failure=on_dependency_failure,
    )
    return produce(spec)[0]


def enqueue_http_many(
    queue: str,
    payloads: Iterable[Mapping[str, Any]],
    path: str | None = None,
    method: str | None = None,
    *,
    priority: int | None = None,
    run_at: datetime | timedelta | None = None,
    max_attempts: int | None = None,
    owner: Any = None,
    tenant_id: str | None = None,
) -> list[Job]:
    """Enqueue one call per payload to the HTTP queue ``queue``, all with this path and method.

    As enqueue_many: a constant number of statements whatever the number of
    calls, and all or nothing (a payload that is not a JSON object refuses the
    whole batch, before anything is written). A payload is the call's body as
    it is, so a ``key`` in it is data, not a job key.
    """
    from .handlers.http import http_job_spec, http_payload  # not at import: see enqueue_http

    bodies = [http_payload(payload) for payload in payloads]
    template = http_job_spec(
        queue,
        None,
        path,
        method=method,
        priority=priority,
        run_at=run_at,
        max_attempts=max_attempts,
        owner=owner,
        tenant_id=tenant_id,
    )
    return produce(template, bodies)


def cancel(jobs: Iterable[Job | int], reason: str = "") -> list[int]:
    """Cancel pending or running jobs; returns the ids that were cancelled (see queue.cancel)."""
    cancelled = q.cancel(jobs, reason)
    for job_id in cancelled:
        signals.send(signals.job_cancelled, job_id=job_id, reason=reason)
    return cancelled


def reschedule(
    jobs: Iterable[Job | int],
    *,
    run_at: datetime | timedelta | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
) -> int:
    """Change when jobs not started yet run, their priority or their attempts; returns how many changed.

    ``reschedule([job], run_at=timedelta(hours=1))``: the same operation as the SQL function
    ``supaqueue_reschedule_jobs`` and the admin's Reschedule action (see queue.reschedule).
    """
    return q.reschedule(jobs, run_at=run_at, priority=priority, max_attempts=max_attempts)

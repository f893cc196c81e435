"""The one door every job comes through: write it with the queue package, then announce it.

Writing and announcing are one call so that no way of making a job can forget
the second half (two of ours did). ``Task.enqueue`` and ``enqueue_many``,
``enqueue``, ``enqueue_http``, pipelines, schedules, the job API, the Django
Tasks backend and model-change jobs all call ``produce``, so ``job_enqueued``,
and the Prometheus counter that listens to it, fire once per job whichever
door made it. The OpenTelemetry trace context is a column of the job row, so
the queue package takes it as it writes the row. Jobs that a job trigger
(``InstallJobTrigger``) writes are made inside PostgreSQL and announce nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import queue as q  # called through the package, where a test replaces a statement
from .models import Job
from .signals import job_enqueued, send


def produce(
    specs: q.JobSpec | Sequence[q.JobSpec],
    payloads: Sequence[dict[str, Any]] | None = None,
    keys: Sequence[str | None] | None = None,
    tenants: Sequence[str | None] | None = None,
) -> list[Job]:
    """Write jobs in the caller's transaction, send ``job_enqueued`` for each, and return them.

    Which statement writes them follows from what the caller has, and costs it nothing to choose:

    - one ``JobSpec``: one job, by the single-row statement (``Task.enqueue``, the hot path);
    - one ``JobSpec`` and ``payloads`` (each with its key in ``keys``, its tenant in ``tenants``):
      the spec is a template for one job per payload, the columnar statement ``enqueue_many``
      needs at thousands of jobs;
    - several ``JobSpec``: written together, all or nothing, edges included (a pipeline's graph).

    A key held by a pending job gives that job back, and it is announced as the call's job.
    """
    if isinstance(specs, q.JobSpec):
        if payloads is None:
            jobs = [q.enqueue_job(specs)]
        else:
            keys = [None] * len(payloads) if keys is None else keys
            jobs = q.enqueue_batch(specs, payloads, keys, tenants)
    else:
        jobs = q.enqueue_jobs(specs)
    if job_enqueued.receivers:  # no receiver, no signal arguments built: the single enqueue is hot
        for job in jobs:
            send(job_enqueued, job_id=job.pk, queue_id=job.queue_id, task_name=job.task_name, job=job)
    return jobs

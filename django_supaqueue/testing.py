"""Helpers for testing code that uses the queue: run jobs inline, drain queues, assert on jobs.

Works in any test runner; with pytest, ``pytest_plugins = ["django_supaqueue.testing"]``
in a conftest.py adds the fixtures ``supaqueue`` and ``supaqueue_immediate``.

``run_pending()`` runs jobs in the test's own thread, on Django's connection,
through the attempt cycle every runner uses (``worker.attempts``: the claim
with its lease and ``started`` event, then complete or fail with retries and
events, and the same life-cycle signals as ``runworkers``), so it sees rows the
test has not committed: it works in ordinary ``django_db`` tests, whose data
never commits. ``immediate()`` calls it whenever a job is enqueued.
``run_worker()`` runs the real worker runtime instead (its own connection,
threads, timeouts): it sees committed data only, so use it in
``transactional_db`` tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from django.db import connections, transaction

from . import conf
from . import queue as q
from .models import Job
from .queue import ClaimedJob, Failure, Success
from .queue import enqueue as enqueue_module
from .tasks import task_name
from .worker import attempts
from .worker.executor import run_attempt
from .worker.process import WorkerProcess

__all__ = [
    "run_pending",
    "immediate",
    "run_worker",
    "enqueued_jobs",
    "assert_enqueued",
    "assert_not_enqueued",
    "QueueHelper",
]

#: Matches any payload or args in assert_enqueued / assert_not_enqueued.
ANY = object()

_local = threading.local()


def run_pending(queues: Sequence[str] | None = None, *, max_jobs: int = 1000) -> list[Job]:
    """Run every job of ``queues`` (None: all) that is runnable now, one at a time; return them.

    Like ``runworkers --burst`` but in this thread and transaction. A retry
    runs in the same call when its back-off is over by then, which inside a
    test's transaction (where the database's ``now()`` stands still) means
    ``RETRY_BACKOFF = 0``; jobs with a future ``run_at`` stay pending. Each
    attempt runs in a savepoint: when a database error aborted it, it is rolled
    back (with the attempt's earlier writes, which autocommit would have kept)
    so the test's transaction goes on. Timeouts are not enforced and every
    queue runs in threads mode: use ``run_worker()`` for those.
    Called from inside a job (a task that enqueues), it returns at once: the
    outer call runs the new job next.
    """
    if getattr(_local, "running", False):
        return []
    alias = conf.get("DATABASE")
    connection = connections[alias]
    connection.ensure_connection()
    raw = _QueueConnection(connection.connection)
    name = f"testing:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    lease = float(conf.get("LEASE_DURATION"))
    ran: list[int] = []
    _local.running = True
    try:
        with transaction.atomic(using=alias):
            worker_id = q.register_worker(
                raw, name=name, host=socket.gethostname(), pid=os.getpid(), queues=queues, concurrency=1
            )
        try:
            while True:
                with transaction.atomic(using=alias):
                    claimed = attempts.claim(
                        raw,
                        worker_id=worker_id,
                        worker_name=name,
                        queues=queues,
                        limit=1,
                        lease_seconds=lease,
                    )
                if not claimed:
                    break
                if len(ran) >= max_jobs:
                    raise RuntimeError(
                        f"run_pending() ran {max_jobs} jobs and more keep coming: does a task enqueue itself?"
                    )
                outcome = _attempt(alias, claimed[0])
                with transaction.atomic(using=alias):
                    attempts.record(
                        raw, worker_id=worker_id, worker_name=name, jobs=claimed, outcomes=[outcome]
                    )
                ran.append(claimed[0].id)
        finally:
            with transaction.atomic(using=alias):
                q.unregister_worker(raw, worker_id)
    finally:
        _local.running = False
    by_id = Job.objects.using(alias).in_bulk(ran)
    return [by_id[i] for i in dict.fromkeys(ran)]


def _attempt(alias: str, job: ClaimedJob) -> Success | Failure:
    """One attempt, inside a savepoint when a transaction is open (rolled back if the database failed)."""

    connection = connections[alias]
    if not connection.in_atomic_block:
        return run_attempt(job)
    savepoint = connection.savepoint()
    outcome = run_attempt(job)
    if connection.needs_rollback or _in_failed_transaction(connection):
        connection.needs_rollback = False  # as atomic() does, so that the rollback may run
        connection.savepoint_rollback(savepoint)
    connection.savepoint_commit(savepoint)  # release it
    return outcome


class _QueueConnection:
    """Django's own psycopg connection, decoding JSON as the worker's connections do.

    the queue package's worker-side functions only call ``execute()``; Django's adapters
    hand jsonb over as text (the ORM decodes it itself), so this registers the
    JSON loader on each cursor it opens, leaving Django's connection unchanged.
    """

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def execute(self, query: str, params: Any = None, *, prepare: bool | None = None) -> Any:
        from psycopg.types.json import JsonbLoader

        cursor = self._raw.cursor()
        cursor.adapters.register_loader("jsonb", JsonbLoader)
        return cursor.execute(query, params, prepare=prepare)


def _in_failed_transaction(connection: Any) -> bool:
    from psycopg.pq import TransactionStatus

    return connection.connection.info.transaction_status == TransactionStatus.INERROR


@contextlib.contextmanager
def immediate() -> Iterator[None]:
    """Run jobs as soon as they are enqueued: every enqueue is followed by ``run_pending()``.

    The enqueue itself is the real one (validation, the INSERT, keys); the job
    then runs in the caller's transaction, before the enqueue call returns.
    Jobs a job trigger inserts in SQL are not seen: call ``run_pending()``.
    """
    previous = enqueue_module.after_enqueue
    enqueue_module.after_enqueue = _run_after_enqueue
    try:
        yield
    finally:
        enqueue_module.after_enqueue = previous


def _run_after_enqueue(jobs: Sequence[Job]) -> None:
    run_pending()


def run_worker(queues: Sequence[str] | None = None, *, concurrency: int = 4) -> Any:
    """Run the real worker in burst mode in this process until nothing is runnable; return it.

    It has its own database connection, so it sees committed rows only: use it
    in ``transactional_db`` tests (or Django's TransactionTestCase).
    """
    worker = WorkerProcess(queues=queues, concurrency=concurrency, burst=True)
    worker.run(handle_signals=False)
    return worker


def enqueued_jobs(task: Any = None, *, queue: str | None = None, status: str | None = None) -> list[Job]:
    """Jobs in the table, oldest first, optionally of one task, queue or status."""
    jobs = Job.objects.using(conf.get("DATABASE")).select_related("queue").order_by("id")
    if task is not None:
        jobs = jobs.filter(task_name=task_name(task))
    if queue is not None:
        jobs = jobs.filter(queue__name=queue)
    if status is not None:
        jobs = jobs.filter(status=status)
    return list(jobs)


def assert_enqueued(
    task: Any, payload: Any = ANY, *, args: Any = ANY, queue: str | None = None, count: int | None = None
) -> list[Job]:
    """Assert that jobs of ``task`` (with this payload / args / queue) exist; return them.

    ``count=None`` means at least one. Payload and args compare as JSON, exactly.
    Every job in the table counts, whatever its status: one that already ran was
    still enqueued.
    """
    matching, candidates = _matching(task, payload, args, queue)
    if (count is None and not matching) or (count is not None and len(matching) != count):
        wanted = "a job" if count is None else f"{count} job(s)"
        raise AssertionError(
            f"Expected {wanted} of {task_name(task)}{_describe(payload, args, queue)}, found {len(matching)}."
            + _listing(candidates)
        )
    return matching


def assert_not_enqueued(task: Any, payload: Any = ANY, *, args: Any = ANY, queue: str | None = None) -> None:
    """Assert that no job of ``task`` (with this payload / args / queue) exists."""
    matching, candidates = _matching(task, payload, args, queue)
    if matching:
        raise AssertionError(
            f"Expected no job of {task_name(task)}{_describe(payload, args, queue)}, found {len(matching)}."
            + _listing(candidates)
        )


def _matching(task: Any, payload: Any, args: Any, queue: str | None) -> tuple[list[Job], list[Job]]:
    candidates = enqueued_jobs(task)
    want_payload = payload if payload is ANY else _as_json(payload)
    want_args = args if args is ANY else _as_json(list(args))
    matching = [
        job
        for job in candidates
        if (want_payload is ANY or job.payload == want_payload)
        and (want_args is ANY or job.args == want_args)
        and (queue is None or job.queue.name == queue)
    ]
    return matching, candidates


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _describe(payload: Any, args: Any, queue: str | None) -> str:
    parts = [
        f"payload={payload!r}" if payload is not ANY else "",
        f"args={args!r}" if args is not ANY else "",
    ]
    parts.append(f"queue={queue!r}" if queue else "")
    described = ", ".join(p for p in parts if p)
    return f" with {described}" if described else ""


def _listing(jobs: Iterable[Job]) -> str:
    lines = [f"\n  #{j.pk} {j.status} queue={j.queue.name} args={j.args} payload={j.payload}" for j in jobs]
    return "\nJobs of that task:" + "".join(lines) if lines else "\nThere is no job of that task."


class QueueHelper:
    """What the ``supaqueue`` fixtures give a test: this module's helpers, as methods."""

    ANY = ANY

    def run_pending(self, queues: Sequence[str] | None = None, *, max_jobs: int = 1000) -> list[Job]:
        return run_pending(queues, max_jobs=max_jobs)

    def run_worker(self, queues: Sequence[str] | None = None, *, concurrency: int = 4) -> Any:
        return run_worker(queues, concurrency=concurrency)

    def immediate(self) -> contextlib.AbstractContextManager[None]:
        return immediate()

    def jobs(self, task: Any = None, *, queue: str | None = None, status: str | None = None) -> list[Job]:
        return enqueued_jobs(task, queue=queue, status=status)

    def assert_enqueued(
        self,
        task: Any,
        payload: Any = ANY,
        *,
        args: Any = ANY,
        queue: str | None = None,
        count: int | None = None,
    ) -> list[Job]:
        return assert_enqueued(task, payload, args=args, queue=queue, count=count)

    def assert_not_enqueued(
        self, task: Any, payload: Any = ANY, *, args: Any = ANY, queue: str | None = None
    ) -> None:
        assert_not_enqueued(task, payload, args=args, queue=queue)


try:
    import pytest
except ImportError:  # the helpers above need no pytest
    pytest = None

if pytest is not None:

    @pytest.fixture
    def supaqueue(db: None) -> QueueHelper:
        """The queue helpers, with database access (``transactional_db`` too, if the test asks for it)."""
        return QueueHelper()

    @pytest.fixture
    def supaqueue_immediate(db: None) -> Iterator[QueueHelper]:
        """The queue helpers, with every job run as soon as it is enqueued, for the whole test."""
        with immediate():
            yield QueueHelper()

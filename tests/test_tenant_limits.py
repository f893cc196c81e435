"""Limits per tenant: a queue whose limit_scope is "tenant" gives each tenant its own cap and rate limit.

The claim is exercised on a worker connection, through the SQL worker's
supaqueue_get_job, and across real ``runworkers`` processes, where one tenant
with many jobs must not hold back the others.
"""

from __future__ import annotations

import itertools
import time
from datetime import timedelta

import psycopg
import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from django_supaqueue import queue as q
from django_supaqueue.models import Job, Queue
from django_supaqueue.queue.spec import JobSpec
from tests.factories import CurrentJobFactory, JobFactory, QueueFactory
from tests.helpers import database_url, wait_for
from tests.testapp import tasks
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)


def claim(conn, worker, limit=20):
    return q.claim(
        conn, worker_id=worker.pk, worker_name=worker.name, queues=None, limit=limit, lease_seconds=30
    )


_SECONDS = itertools.count()


def jobs(queue, tenant, count, **fields):
    """``count`` runnable jobs of one tenant (None: no tenant), each younger than every job made before."""
    start = timezone.now() - timedelta(hours=1)
    return [
        JobFactory(queue=queue, tenant_id=tenant, run_at=start + timedelta(seconds=next(_SECONDS)), **fields)
        for _ in range(count)
    ]


def tenants_of(claimed) -> dict[str | None, int]:
    found = dict(Job.objects.filter(pk__in=[j.id for j in claimed]).values_list("pk", "tenant_id"))
    counts: dict[str | None, int] = {}
    for job in claimed:
        counts[found[job.id]] = counts.get(found[job.id], 0) + 1
    return counts


def test_a_cap_per_tenant_gives_every_tenant_its_own_room(conn, worker):
    shared = QueueFactory(name="shared", concurrency_limit=2, limit_scope="tenant")
    jobs(shared, "noisy", 10)  # older than every other tenant's: first in claim order
    jobs(shared, "a", 3)
    jobs(shared, "b", 1)
    jobs(shared, None, 3)  # jobs without a tenant are one tenant of their own
    CurrentJobFactory(job__queue=shared, job__tenant_id="a")  # another worker already runs one of a's
    assert tenants_of(claim(conn, worker)) == {"noisy": 2, "a": 1, "b": 1, None: 2}
    assert claim(conn, worker) == []


def test_the_same_cap_for_the_queue_holds_every_tenant_to_it(conn, worker):
    whole = QueueFactory(name="whole", concurrency_limit=2)
    jobs(whole, "noisy", 10)
    jobs(whole, "a", 3)
    assert tenants_of(claim(conn, worker)) == {"noisy": 2}


def test_a_finished_attempt_frees_room_for_its_own_tenant_only(conn, worker):
    shared = QueueFactory(name="shared", concurrency_limit=1, limit_scope="tenant")
    jobs(shared, "a", 2)
    jobs(shared, "b", 2)
    first = claim(conn, worker)
    assert tenants_of(first) == {"a": 1, "b": 1}
    a_job = next(j for j in first if Job.objects.get(pk=j.id).tenant_id == "a")
    q.complete(
        conn, worker_id=worker.pk, worker_name=worker.name, successes=[q.Success(a_job.id, 1, None, 0.1)]
    )
    assert tenants_of(claim(conn, worker)) == {"a": 1}


def test_a_rate_limit_per_tenant_counts_each_tenant_s_starts(conn, worker):
    hooks = QueueFactory(name="hooks", rate_limit=3, rate_period=60, limit_scope="tenant")
    jobs(hooks, "noisy", 10)
    jobs(hooks, "quiet", 2)
    assert tenants_of(claim(conn, worker)) == {"noisy": 3, "quiet": 2}
    jobs(hooks, "quiet", 2)
    assert tenants_of(claim(conn, worker)) == {"quiet": 1}  # its window holds two starts already
    assert claim(conn, worker) == []


def test_a_worker_sleeps_until_the_first_tenant_has_room_again(conn, worker):
    """rate_wake, for limits per tenant: the earliest moment one tenant's window frees a start."""
    hooks = QueueFactory(name="hooks", rate_limit=1, rate_period=30, limit_scope="tenant")
    jobs(hooks, "a", 2)
    jobs(hooks, "b", 1)
    before = time.time()
    result = q.finish_and_claim(
        conn,
        worker_id=worker.pk,
        worker_name=worker.name,
        successes=[],
        failures=[],
        freed_queues=[],
        limit=10,
        queues=None,
        lease_seconds=30,
    )
    assert tenants_of(result.jobs) == {"a": 1, "b": 1}
    assert result.rate_wake is not None and before + 29 < result.rate_wake < time.time() + 31


def test_a_tenant_with_thousands_of_jobs_leaves_room_for_a_tenant_that_comes_later(conn, worker):
    shared = QueueFactory(name="shared", concurrency_limit=3, limit_scope="tenant")
    q.enqueue_jobs(
        [JobSpec(task_name="tests.testapp.tasks.noop", payload={}, queue="shared", tenant_id="bulk")] * 3000
    )
    late = JobFactory(queue=shared, tenant_id="late")
    claimed = claim(conn, worker)
    assert tenants_of(claimed) == {"bulk": 3, "late": 1} and late.id in {j.id for j in claimed}


def test_the_sql_worker_keeps_to_the_caps_per_tenant(conn):
    shared = QueueFactory(name="shared", concurrency_limit=1, limit_scope="tenant")
    jobs(shared, "a", 3)
    jobs(shared, "b", 1)
    with psycopg.connect(database_url(), autocommit=True) as raw:
        taken = [
            raw.execute("SELECT (supaqueue_get_job('node-1')).tenant_id").fetchone()[0] for _ in range(4)
        ]
    assert sorted(taken, key=str) == [None, None, "a", "b"]


def test_a_serial_queue_keeps_its_limits_for_the_whole_queue():
    with pytest.raises(ValidationError, match="serial queue's limits apply to the queue"):
        Queue(name="ordered", serial=True, limit_scope="tenant").full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        Queue.objects.create(name="ordered", serial=True, limit_scope="tenant")


def overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals that run at one moment."""
    edges = sorted(itertools.chain(((s, 1) for s, _ in intervals), ((e, -1) for _, e in intervals)))
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def test_workers_on_several_processes_keep_each_tenant_to_its_cap_and_serve_a_late_tenant(worker_processes):
    QueueFactory(name="tenants", concurrency_limit=2, limit_scope="tenant")
    specs = [
        JobSpec(
            task_name=tasks.hold.name,
            payload={"n": n, "seconds": 0.4, "label": "noisy"},
            queue="tenants",
            tenant_id="noisy",
        )
        for n in range(16)
    ] + [
        JobSpec(
            task_name=tasks.hold.name,
            payload={"n": n, "seconds": 0.4, "label": t},
            queue="tenants",
            tenant_id=t,
        )
        for t in ("a", "b")
        for n in range(2)
    ]
    q.enqueue_jobs(specs)
    for _ in range(3):
        worker_processes.start("-q", "tenants", "-c", "4")
    wait_for(lambda: Execution.objects.filter(ended__isnull=False).count() == 20, timeout=60)
    runs = {
        label: sorted((r.started, r.ended) for r in Execution.objects.filter(label=label))
        for label in ("noisy", "a", "b")
    }
    assert {label: len(r) for label, r in runs.items()} == {"noisy": 16, "a": 2, "b": 2}
    assert {label: overlap(r) for label, r in runs.items()} == {"noisy": 2, "a": 2, "b": 2}
    assert sorted(Execution.objects.filter(label="noisy").values_list("n", flat=True)) == list(range(16))
    # With one cap for the whole queue, a's and b's jobs would wait behind all of noisy's.
    noisy_starts = [s for s, _ in runs["noisy"]]
    assert max(s for label in ("a", "b") for s, _ in runs[label]) < noisy_starts[4]
    assert Job.objects.filter(status=Job.Status.SUCCESSFUL).count() == 20


def test_workers_on_several_processes_keep_each_tenant_to_its_rate_limit(worker_processes):
    QueueFactory(name="paced", rate_limit=2, rate_period=1.0, limit_scope="tenant")
    specs = [
        JobSpec(task_name=tasks.record.name, payload={"n": n, "label": t}, queue="paced", tenant_id=t)
        for t, count in (("noisy", 8), ("quiet", 2))
        for n in range(count)
    ]
    q.enqueue_jobs(specs)
    for _ in range(3):
        worker_processes.start("-q", "paced", "-c", "4")
    wait_for(lambda: Execution.objects.count() == 10, timeout=60)
    for label in ("noisy", "quiet"):
        starts = sorted(Execution.objects.filter(label=label).values_list("started", flat=True))
        # No window of one period holds more than two starts (claims are logged before the body starts).
        assert all(later - earlier > 0.8 for earlier, later in zip(starts, starts[2:], strict=False)), starts
    quiet = sorted(Execution.objects.filter(label="quiet").values_list("started", flat=True))
    noisy = sorted(Execution.objects.filter(label="noisy").values_list("started", flat=True))
    assert quiet[-1] < noisy[2]  # quiet's two ran in the first window, beside noisy's first two


def test_the_tenant_claim_never_scans_the_job_table(conn, worker):
    from django.db import connection

    from django_supaqueue.queue import claims

    QueueFactory(name="shared", concurrency_limit=2, limit_scope="tenant")
    QueueFactory(name="plain")
    q.enqueue_jobs(
        [
            JobSpec(task_name="tests.testapp.tasks.noop", payload={}, queue="shared", tenant_id=f"t{n % 50}")
            for n in range(3000)
        ]
        + [JobSpec(task_name="tests.testapp.tasks.noop", payload={}, queue="plain")] * 3000
    )
    with connection.cursor() as cur:
        cur.execute("ANALYZE supaqueue_job")
    params = claims.claim_params(worker.pk, worker.name, None, 10, 30.0)
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + claims.SQL["claim_tenants"], params).fetchall())
    assert "Seq Scan on supaqueue_job" not in plan, plan
    assert "supaqueue_job_tenant_claim" in plan


def test_a_claim_without_the_tenant_statement_leaves_those_queues_alone_and_says_so(conn, worker):
    """Workers leave claim_tenants out while they serve no such queue; one set meanwhile is claimed next."""

    def round_trip(**options):
        return q.finish_and_claim(
            conn,
            worker_id=worker.pk,
            worker_name=worker.name,
            successes=[],
            failures=[],
            freed_queues=[],
            limit=10,
            queues=None,
            lease_seconds=30,
            **options,
        )

    capped = QueueFactory(name="capped", concurrency_limit=5)
    JobFactory(queue=capped)
    plain = round_trip(tenants=False)
    assert len(plain.jobs) == 1 and plain.capped is True and plain.tenants is False
    shared = QueueFactory(name="shared", concurrency_limit=1, limit_scope="tenant")
    jobs(shared, "a", 2)
    lean = round_trip(tenants=False)
    assert lean.jobs == [] and lean.tenants is True  # left out: the next claim takes them
    assert tenants_of(round_trip(tenants=True).jobs) == {"a": 1}


def test_a_queue_declared_in_settings_gets_its_limits_per_tenant():
    from django.test import override_settings

    declared = {
        "reports": {"concurrency_limit": 2, "rate_limit": 10, "rate_period": 60, "limit_scope": "tenant"}
    }
    with override_settings(SUPAQUEUE={"QUEUES": declared}):
        tasks.noop.using(queue="reports").enqueue()
    made = Queue.objects.get(name="reports")
    assert (made.concurrency_limit, made.rate_limit, made.rate_period, made.limit_scope) == (
        2,
        10,
        60.0,
        "tenant",
    )
    tasks.noop.using(queue="plain").enqueue()
    assert Queue.objects.filter(name="plain", limit_scope="queue", rate_period=1.0, rate_limit=None).exists()

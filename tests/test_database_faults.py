"""Statements that fail on a live connection, and registrations that go missing.

A cancelled statement, a lock timeout or a statement timeout is not a dead
connection: the worker tries again on the same connection, under the same
registration, and none of its jobs is orphaned. Recovery never depends on a
Worker row still being there.
"""

import time
from datetime import timedelta

import psycopg
import pytest
from django.db.models import Count
from django.utils import timezone

from django_supaqueue import queue as q
from django_supaqueue.models import CurrentJob, Job, JobEvent, Worker
from tests.factories import CurrentJobFactory
from tests.helpers import database_url, job_statuses, wait_for
from tests.testapp import tasks
from tests.testapp.models import Execution

FAST = {
    "SUPAQUEUE_LEASE_DURATION": "3",
    "SUPAQUEUE_HEARTBEAT_INTERVAL": "0.5",
    "SUPAQUEUE_POLL_INTERVAL": "0.2",
}


def cancel_lock_waiters(locker: psycopg.Connection) -> int:
    """pg_cancel_backend() every backend of this database that waits on a lock; returns how many."""
    return locker.execute(
        "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    ).fetchone()[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fault", ["pg_cancel_backend", "lock_timeout"])
def test_a_statement_failing_on_a_live_connection_keeps_the_worker_and_its_jobs(worker_processes, fault):
    env = dict(FAST)
    if fault == "lock_timeout":
        env["SUPAQUEUE_TEST_PG_OPTIONS"] = "-c lock_timeout=300"  # as a project's OPTIONS would set it
    proc = worker_processes.start("-c", "4", env=env)
    worker_processes.wait_ready(1)
    registered = Worker.objects.get().pk
    tasks.nap.enqueue_many([{"n": i, "seconds": 0.2} for i in range(12)])
    wait_for(lambda: Execution.objects.exists(), 10)
    with psycopg.connect(database_url()) as locker:
        locker.execute("LOCK TABLE supaqueue_job IN EXCLUSIVE MODE")  # claims and outcomes now wait
        cancelled = 0
        for _ in range(15):
            if fault == "pg_cancel_backend":
                cancelled += cancel_lock_waiters(locker)
            time.sleep(0.2)
        locker.rollback()
    if fault == "pg_cancel_backend":
        assert cancelled >= 2
    tasks.nap.enqueue_many([{"n": i, "seconds": 0.05} for i in range(100, 120)])
    try:
        wait_for(lambda: job_statuses() == {Job.Status.SUCCESSFUL: 32}, 30)
    except AssertionError:
        raise AssertionError(f"{job_statuses()}\n{worker_processes.log(proc)}") from None
    assert not CurrentJob.objects.exists()
    runs = Execution.objects.values("n").annotate(c=Count("id"))
    assert runs.count() == 32 and {r["c"] for r in runs} == {1}
    assert list(Worker.objects.values_list("pk", flat=True)) == [registered]
    log = worker_processes.log(proc)
    assert "a statement failed" in log
    assert "lost its database connection" not in log and "registration removed" not in log


@pytest.mark.django_db(transaction=True)
def test_a_worker_whose_row_was_removed_registers_again_under_its_own_id(worker_processes):
    proc = worker_processes.start("-c", "2", env=FAST)
    worker_processes.wait_ready(1)
    row = Worker.objects.get()
    Worker.objects.filter(pk=row.pk).delete()  # as a stale-worker sweep would, while it holds nothing
    wait_for(lambda: Worker.objects.filter(pk=row.pk, name=row.name).exists(), 10)
    tasks.nap.enqueue_many([{"n": i, "seconds": 0.05} for i in range(10)])
    wait_for(lambda: job_statuses() == {Job.Status.SUCCESSFUL: 10}, 20)
    assert "registration removed" in worker_processes.log(proc)


@pytest.mark.django_db(transaction=True)
def test_recovery_expires_a_lease_whose_worker_row_is_gone(conn):
    lease = CurrentJobFactory(lease_expires_at=timezone.now() - timedelta(seconds=1))
    CurrentJob.objects.filter(pk=lease.pk).update(worker_id=987654)  # no such Worker: its row is gone
    retries = q.recover_expired(conn)
    assert [(r.job_id, r.status) for r in retries] == [(lease.job_id, Job.Status.PENDING)]
    assert not CurrentJob.objects.exists()
    event = JobEvent.objects.get(job_id=lease.job_id, kind=JobEvent.Kind.RETRIED)
    assert event.error_class == "django_supaqueue.exceptions.WorkerLost" and "#987654" in event.error_message
    assert "registration is gone" in event.error_message

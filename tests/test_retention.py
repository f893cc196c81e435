"""Keeping the tables healthy: retention, the prune command, and index-only claim paths."""

import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from django_supaqueue import queue as q
from django_supaqueue.models import Job, JobEvent
from django_supaqueue.queue import actions, claims, outcomes
from django_supaqueue.worker.connection import connect
from django_supaqueue.worker.process import WorkerProcess
from tests.factories import JobEventFactory, JobFactory
from tests.helpers import wait_for
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def finished(status, hours_ago):
    job = JobFactory(status=status, finished_at=timezone.now() - timedelta(hours=hours_ago))
    JobEventFactory(job=job, kind="succeeded")
    return job


def test_prune_deletes_finished_jobs_past_retention_with_their_events():
    old_ok, new_ok = finished("successful", 30), finished("successful", 1)
    old_failed, older_failed = finished("failed", 30), finished("failed", 400)
    old_cancelled = finished("cancelled", 30)
    pending = JobFactory(run_at=timezone.now() - timedelta(days=30))
    with connect() as conn:
        deleted = q.prune(conn, successful_hours=24, failed_hours=24 * 14, cancelled_hours=None, batch=100)
    assert deleted == 2
    left = set(Job.objects.values_list("pk", flat=True))
    assert left == {new_ok.pk, old_failed.pk, old_cancelled.pk, pending.pk}
    assert older_failed.pk not in left and old_ok.pk not in left
    assert not JobEvent.objects.filter(job_id__in=[old_ok.pk, older_failed.pk]).exists()


def test_prune_command_works_in_batches(capsys):
    for _ in range(25):
        finished("successful", 48)
    call_command("supaqueue_prune", "--successful-hours", "24", "--batch", "10")
    assert "deleted 25 finished jobs" in capsys.readouterr().out
    assert not Job.objects.exists()


def test_prune_command_shows_its_progress(capsys):
    for _ in range(25):
        finished("successful", 48)
    call_command("supaqueue_prune", "--successful-hours", "24", "--batch", "10", "-v", "2")
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in lines[:2]] == [
        "deleted 10 finished jobs so far",
        "deleted 20 finished jobs so far",
    ]
    assert lines[2].startswith("deleted 25 finished jobs in ")


def test_workers_prune_on_their_own(settings):
    settings.SUPAQUEUE = {
        **settings.SUPAQUEUE,
        "RETAIN_SUCCESSFUL_HOURS": 0.0,
        "PRUNE_INTERVAL": 0.0,
        "HEARTBEAT_INTERVAL": 0.2,
    }
    tasks.noop.enqueue_many([{"i": i} for i in range(20)])
    worker = WorkerProcess(concurrency=2, poll_interval=0.2)
    thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False})
    thread.start()
    try:
        wait_for(lambda: worker.processed == 20 and not Job.objects.exists(), 10)
    finally:
        worker.stop()
        thread.join(10)


def plan(conn, sql, params):
    return "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, params).fetchall())


def test_claim_complete_and_prune_never_scan_the_job_table():
    tasks.noop.enqueue_many([{"i": i} for i in range(3000)])
    tasks.noop.using(run_at=timedelta(days=1)).enqueue_many([{"i": i} for i in range(3000)])
    with connection.cursor() as cur:
        cur.execute("ANALYZE supaqueue_job")
    with connect() as conn:
        worker_id = q.register_worker(conn, name="x", host="h", pid=1, queues=None, concurrency=1)
        claim = claims.claim_params(worker_id, "x", None, 10, 30.0)
        complete = outcomes._complete_params(worker_id, "x", [q.Success(1, 1, None, 0.0)])
        prune = {"successful": 1.0, "failed": 1.0, "cancelled": 1.0, "oldest": 1.0, "batch": 10}
        statements = (
            (claims.SQL["claim"], claim),
            (outcomes.SQL["complete"], complete),
            (actions.SQL["prune"], prune),
        )
        for sql, params in statements:
            text = plan(conn, sql, params)
            assert "Seq Scan on supaqueue_job" not in text, text


def test_the_rate_limit_wake_up_reads_no_job_without_a_rate_limited_queue():
    """It runs on every claim, so its plan must never scan the runnable jobs."""
    tasks.noop.enqueue_many([{"i": i} for i in range(3000)])
    with connection.cursor() as cur:
        cur.execute("ANALYZE supaqueue_job")
    with connect() as conn:
        rows = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + claims.rate_wake_statement(None, 0.1)
        ).fetchone()[0]

    def job_rows_read(node):
        own = node.get("Actual Rows", 0) if node.get("Relation Name") == "supaqueue_job" else 0
        return own + sum(job_rows_read(child) for child in node.get("Plans", []))

    # 3,000 runnable jobs, none read (the serial-work probe looks at grouped jobs: there are none).
    assert job_rows_read(rows[0]["Plan"]) == 0


def hold_a_lease() -> int:
    """A worker named "holder" that claims one pending job and keeps its lease; its id."""
    with connect() as conn:
        wid = q.register_worker(conn, name="holder", host="h", pid=1, queues=None, concurrency=1)
        q.claim(conn, worker_id=wid, worker_name="holder", queues=None, limit=1, lease_seconds=30)
        conn.commit()
    return wid


def test_deleting_jobs_with_sql_takes_their_lease_and_events_and_workers_with_leases_stay(drain):
    """The lease and event tables have no foreign keys (see CurrentJob); triggers do their deletes."""
    from django.db import IntegrityError, transaction

    from django_supaqueue.models import CurrentJob, JobEvent, Worker

    done = tasks.noop.enqueue()
    drain()
    running = tasks.noop.enqueue()
    wid = hold_a_lease()
    assert JobEvent.objects.filter(job=done).exists() and CurrentJob.objects.filter(job=running).exists()
    with (
        pytest.raises(IntegrityError, match="worker holder still holds leases"),
        transaction.atomic(),
        connection.cursor() as cur,
    ):
        cur.execute("DELETE FROM supaqueue_worker WHERE id = %s", [wid])
    with connection.cursor() as cur:
        cur.execute("DELETE FROM supaqueue_job WHERE id IN (%s, %s)", [done.pk, running.pk])
    assert not JobEvent.objects.filter(job_id__in=[done.pk, running.pk]).exists()
    assert not CurrentJob.objects.filter(job_id=running.pk).exists()
    Worker.objects.filter(pk=wid).delete()


def test_truncating_the_job_table_takes_its_leases_and_events(drain):
    """Left behind by TRUNCATE ... RESTART IDENTITY, they would give the new job 1 the old one's history."""
    from django_supaqueue.models import CurrentJob, JobEvent

    tasks.noop.enqueue()
    drain()
    running = tasks.noop.enqueue()
    hold_a_lease()
    assert JobEvent.objects.exists() and CurrentJob.objects.filter(job=running).exists()
    with connection.cursor() as cur:
        cur.execute("TRUNCATE supaqueue_job RESTART IDENTITY CASCADE")
    assert not JobEvent.objects.exists() and not CurrentJob.objects.exists()
    fresh = tasks.noop.enqueue()
    assert fresh.pk == 1 and not JobEvent.objects.filter(job_id=fresh.pk).exists()
    with connection.cursor() as cur:  # naming them too, as Django's flush does, is no error
        cur.execute("TRUNCATE supaqueue_job, supaqueue_jobevent, supaqueue_currentjob CASCADE")

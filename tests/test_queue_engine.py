"""The queue's SQL, exercised directly on a worker connection: claim, complete, fail, recover."""

import tempfile
from datetime import timedelta

import psycopg
import pytest
from django.utils import timezone

from django_supaqueue import queue as q
from django_supaqueue.models import CurrentJob, Job, JobEvent, Worker
from tests.factories import CurrentJobFactory, JobFactory, QueueFactory, WorkerFactory

pytestmark = pytest.mark.django_db(transaction=True)


def claim(conn, worker, limit=10, queues=None, lease=30.0):
    return q.claim(
        conn, worker_id=worker.pk, worker_name=worker.name, queues=queues, limit=limit, lease_seconds=lease
    )


def test_claim_orders_by_priority_then_run_at_then_id(conn, worker):
    now = timezone.now()
    low = JobFactory(priority=-10, run_at=now - timedelta(hours=1))
    old = JobFactory(priority=0, run_at=now - timedelta(minutes=10))
    newer_a = JobFactory(priority=0, run_at=now - timedelta(minutes=1))
    newer_b = JobFactory(priority=0, run_at=newer_a.run_at)
    high = JobFactory(priority=50, run_at=now)
    assert [j.id for j in claim(conn, worker)] == [high.id, old.id, newer_a.id, newer_b.id, low.id]


def test_claim_takes_no_more_than_the_limit_and_leases_each_job(conn, worker):
    for _ in range(5):
        JobFactory()
    claimed = claim(conn, worker, limit=3)
    assert len(claimed) == 3 and all(j.attempt == 1 for j in claimed)
    leases = CurrentJob.objects.filter(worker=worker)
    assert sorted(leases.values_list("job_id", flat=True)) == sorted(j.id for j in claimed)
    assert Job.objects.filter(status=Job.Status.IN_PROGRESS).count() == 3
    assert JobEvent.objects.filter(kind=JobEvent.Kind.STARTED).count() == 3


def test_claim_skips_held_jobs_future_jobs_and_paused_queues(conn, worker):
    JobFactory(enabled=False)
    JobFactory(run_at=timezone.now() + timedelta(minutes=5))
    JobFactory(queue=QueueFactory(name="stopped", paused=True))
    runnable = JobFactory()
    assert [j.id for j in claim(conn, worker)] == [runnable.id]


def test_claim_serves_only_the_named_queues(conn, worker):
    JobFactory(queue=QueueFactory(name="a"))
    b = JobFactory(queue=QueueFactory(name="b"))
    assert [j.id for j in claim(conn, worker, queues=["b", "missing"])] == [b.id]


def test_concurrency_limit_counts_running_jobs_cluster_wide(conn, worker):
    capped = QueueFactory(name="capped", concurrency_limit=2)
    CurrentJobFactory(job__queue=capped)  # another worker already runs one
    for _ in range(4):
        JobFactory(queue=capped)
    first = claim(conn, worker)
    assert len(first) == 1
    assert claim(conn, worker) == []
    q.complete(
        conn,
        worker_id=worker.pk,
        worker_name=worker.name,
        successes=[q.Success(first[0].id, first[0].attempt, None, 0.1)],
    )
    assert len(claim(conn, worker)) == 1


def round_trip(conn, worker, *, limit=10, successes=(), **options):
    """One cycle of the claim loop: finish_and_claim with the worker's defaults."""
    options = {"queues": None, "lease_seconds": 30, **options}
    return q.finish_and_claim(
        conn,
        worker_id=worker.pk,
        worker_name=worker.name,
        successes=list(successes),
        failures=[],
        freed_queues=[],
        limit=limit,
        **options,
    )


def test_a_claim_without_the_cap_lock_leaves_capped_queues_alone_and_says_so(conn, worker):
    """Workers leave the lock statement out while they serve no capped queue; a cap set meanwhile holds."""
    plain = JobFactory()
    assert round_trip(conn, worker, lock=False).jobs[0].id == plain.id
    assert round_trip(conn, worker, lock=False).capped is False
    capped = QueueFactory(name="capped", concurrency_limit=1)
    limited = QueueFactory(name="limited", rate_limit=5, rate_period=60)
    for queue in (capped, capped, limited):
        JobFactory(queue=queue)
    lean = round_trip(conn, worker, lock=False)
    assert lean.jobs == [] and lean.capped is True  # no room without the lock: the next claim takes it
    locked = round_trip(conn, worker, lock=True)
    assert sorted(j.queue for j in locked.jobs) == ["capped", "limited"] and locked.capped is True


def test_complete_stores_the_result_and_frees_the_lease(conn, worker):
    job = JobFactory()
    [claimed] = claim(conn, worker)
    done = q.complete(
        conn,
        worker_id=worker.pk,
        worker_name=worker.name,
        successes=[q.Success(claimed.id, claimed.attempt, '{"ok": true}', 0.25)],
    )
    assert done == {job.id}
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCESSFUL and job.result == {"ok": True} and job.finished_at
    assert not CurrentJob.objects.exists()
    event = JobEvent.objects.get(kind=JobEvent.Kind.SUCCEEDED)
    assert event.attempt == 1 and event.worker_name == "w1" and event.duration == 0.25


def test_finish_and_claim_commits_all_or_nothing_in_one_round_trip(conn, worker):
    """Without BEGIN/COMMIT the pipeline's Sync is the commit: a failing claim undoes the completion."""
    job = JobFactory()
    JobFactory()
    [claimed] = claim(conn, worker, limit=1)
    done = [q.Success(claimed.id, claimed.attempt, "null", 0.1)]
    with pytest.raises(psycopg.errors.DatetimeFieldOverflow):
        # A lease of 1e300 s is out of interval range: the claim, last in the pipeline, fails.
        round_trip(conn, worker, limit=1, successes=done, lease_seconds=1e300)
    job.refresh_from_db()
    assert job.status == Job.Status.IN_PROGRESS and CurrentJob.objects.count() == 1
    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        retries, jobs, *_ = round_trip(conn, worker, limit=1, successes=done)
        conn.pgconn.untrace()
        trace.seek(0)
        lines = [line.split("\t") for line in trace.read().splitlines()]
    sent = [parts[3] for parts in lines if len(parts) > 3 and parts[1] == "F"]
    statements = " ".join(parts[4] for parts in lines if len(parts) > 4 and parts[3] == "Parse")
    assert sent.count("Sync") == 1 and "BEGIN" not in statements and "COMMIT" not in statements
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCESSFUL and len(jobs) == 1 and not retries


@pytest.mark.parametrize("queues", [None, ["default", "emails"]])
def test_the_claim_loop_statements_are_planned_once(conn, worker, queues):
    """A worker claims over and over, idle or not: its statements are planned once, not on every call."""
    QueueFactory(name="emails")
    for _ in range(15):
        JobFactory()
        _, [job], *_ = round_trip(conn, worker, limit=1, queues=queues, serial=False)
        round_trip(
            conn, worker, limit=0, queues=queues, successes=[q.Success(job.id, job.attempt, None, 0.0)]
        )
    plans = conn.execute(
        "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
    ).fetchall()
    assert len(plans) >= 4  # lock, claim, wake-up, complete
    for statement, generic, custom in plans:
        assert generic > 0 and custom <= 5, (statement[:120], generic, custom)


def test_a_stale_attempt_cannot_overwrite_newer_state(conn, worker):
    JobFactory()
    [claimed] = claim(conn, worker)
    wrong_attempt = q.Success(claimed.id, claimed.attempt + 1, "1", 0.1)
    assert q.complete(conn, worker_id=worker.pk, worker_name="w1", successes=[wrong_attempt]) == set()
    other = WorkerFactory()
    right_attempt = q.Success(claimed.id, claimed.attempt, "1", 0.1)
    assert q.complete(conn, worker_id=other.pk, worker_name=other.name, successes=[right_attempt]) == set()
    assert Job.objects.get().status == Job.Status.IN_PROGRESS
    assert not JobEvent.objects.filter(kind=JobEvent.Kind.SUCCEEDED).exists()


def failure(job, **kw):
    return q.Failure(job.id, job.attempt, "ValueError", "boom", "Traceback ...", 0.1, **kw)


def test_failure_with_attempts_left_goes_back_to_pending_after_backoff(conn, worker, settings):
    settings.SUPAQUEUE = {"RETRY_BACKOFF": 10.0, "RETRY_BACKOFF_MAX": 100.0}
    job = JobFactory(max_attempts=3)
    [claimed] = claim(conn, worker)
    before = timezone.now()
    [retry] = q.fail(conn, worker_id=worker.pk, worker_name="w1", failures=[failure(claimed)])
    job.refresh_from_db()
    assert retry.status == job.status == Job.Status.PENDING
    low, high = q.retry_delay_bounds(1, 10.0, 100.0)
    assert before + timedelta(seconds=low - 1) <= job.run_at <= timezone.now() + timedelta(seconds=high)
    assert job.last_error == "ValueError: boom"
    event = JobEvent.objects.get(kind=JobEvent.Kind.RETRIED)
    assert event.retry_at == job.run_at and event.traceback == "Traceback ..."
    assert claim(conn, worker) == []  # waiting out its back-off


def test_backoff_grows_exponentially_and_is_capped(conn, worker, settings):
    settings.SUPAQUEUE = {"RETRY_BACKOFF": 1.0, "RETRY_BACKOFF_MAX": 5.0}
    job = JobFactory(max_attempts=10, attempts=7)  # the next attempt is the 8th
    [claimed] = claim(conn, worker)
    before = timezone.now()
    q.fail(conn, worker_id=worker.pk, worker_name="w1", failures=[failure(claimed)])
    job.refresh_from_db()
    delay = (job.run_at - before).total_seconds()
    assert 2.4 <= delay <= 5.1  # capped at 5 s (1 * 2**7 = 128 uncapped), jitter keeps >= half


def test_explicit_retry_at_wins_over_backoff(conn, worker):
    JobFactory(max_attempts=3)
    [claimed] = claim(conn, worker)
    at = timezone.now() + timedelta(minutes=7)
    [retry] = q.fail(conn, worker_id=worker.pk, worker_name="w1", failures=[failure(claimed, retry_at=at)])
    assert retry.run_at == at


def test_last_attempt_failure_is_final(conn, worker):
    job = JobFactory(max_attempts=1)
    [claimed] = claim(conn, worker)
    [retry] = q.fail(conn, worker_id=worker.pk, worker_name="w1", failures=[failure(claimed)])
    job.refresh_from_db()
    assert retry.status == job.status == Job.Status.FAILED and job.finished_at
    assert JobEvent.objects.filter(kind=JobEvent.Kind.FAILED, error_class="ValueError").count() == 1


def test_expired_leases_are_recovered_as_lost_attempts(conn, worker):
    dead = WorkerFactory(name="dead-worker", last_heartbeat_at=timezone.now() - timedelta(minutes=5))
    gone = CurrentJobFactory(
        worker=dead, job__max_attempts=3, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    last = CurrentJobFactory(
        worker=dead, job__max_attempts=1, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    alive = CurrentJobFactory(worker=worker)
    retries = q.recover_expired(conn, stale_after=60)
    assert {(r.job_id, r.status) for r in retries} == {
        (gone.job_id, Job.Status.PENDING),
        (last.job_id, Job.Status.FAILED),
    }
    assert list(CurrentJob.objects.values_list("pk", flat=True)) == [alive.pk]
    assert not Worker.objects.filter(pk=dead.pk).exists()
    lost = JobEvent.objects.get(job_id=gone.job_id)
    assert lost.error_class == "django_supaqueue.exceptions.WorkerLost"
    assert "dead-worker" in lost.error_message


def test_heartbeat_renews_only_the_leases_the_worker_runs(conn, worker):
    soon = timezone.now() + timedelta(seconds=2)
    running = CurrentJobFactory(worker=worker, lease_expires_at=soon)
    ghost = CurrentJobFactory(worker=worker, lease_expires_at=soon)
    beat = q.heartbeat(conn, worker.pk, 60.0, [(running.job_id, running.attempt)])
    assert beat == q.Beat(registered=True, renewed={(running.job_id, running.attempt)})
    running.refresh_from_db()
    ghost.refresh_from_db()
    assert running.lease_expires_at > soon + timedelta(seconds=30)
    assert ghost.lease_expires_at == soon
    CurrentJob.objects.all().delete()
    Worker.objects.all().delete()
    assert q.heartbeat(conn, worker.pk, 60.0, []) == q.Beat(registered=False, renewed=set())


def test_insert_notifies_listeners_with_the_queue_and_due_time(conn):
    conn.execute("LISTEN supaqueue")
    from tests.testapp import tasks

    tasks.noop.enqueue()
    tasks.noop.using(queue="later").enqueue(run_at=timedelta(hours=1))
    payloads = sorted(n.payload for n in conn.notifies(timeout=1.0, stop_after=2))
    assert payloads[0] == "default 0"
    queue, epoch = payloads[1].split()
    assert queue == "later" and float(epoch) > timezone.now().timestamp() + 3500


def test_a_retry_gives_its_key_to_a_newer_pending_job(conn, worker):
    first = JobFactory(key="sync:1", max_attempts=3)
    [claimed] = claim(conn, worker)
    from tests.testapp import tasks

    newer = tasks.noop.enqueue(key="sync:1")  # the keyed job is running, so a new one is created
    assert newer.pk != first.pk
    [retry] = q.fail(conn, worker_id=worker.pk, worker_name="w1", failures=[failure(claimed)])
    first.refresh_from_db()
    assert retry.status == first.status == Job.Status.PENDING and first.key is None
    assert Job.objects.get(pk=newer.pk).key == "sync:1"


def test_a_release_gives_its_key_to_a_newer_pending_job(conn, worker):
    first = JobFactory(key="sync:2")
    [claimed] = claim(conn, worker)
    from tests.testapp import tasks

    newer = tasks.noop.enqueue(key="sync:2")
    held = [(claimed.id, claimed.attempt)]
    assert q.release(conn, worker_id=worker.pk, worker_name="w1", held=held) == [first.pk]
    first.refresh_from_db()
    assert first.status == Job.Status.PENDING and first.key is None and first.attempts == 0
    assert Job.objects.get(pk=newer.pk).key == "sync:2"


def test_the_round_trip_says_which_successes_it_wrote_and_leaves_out_those_fenced(conn, worker):
    """A worker back from a partition must not announce outcomes its lost leases threw away."""
    kept, lost = JobFactory(), JobFactory()
    claimed = {j.id: j for j in claim(conn, worker)}
    CurrentJob.objects.filter(job_id=lost.id).delete()  # recovered elsewhere meanwhile
    done = round_trip(
        conn,
        worker,
        limit=0,
        successes=[q.Success(i, claimed[i].attempt, None, 0.1) for i in (kept.id, lost.id)],
    )
    assert done.completed == {kept.id}

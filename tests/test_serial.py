"""Serial queues and serial groups: one job at a time per queue or group, cluster-wide, in claim order."""

import threading
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.urls import reverse
from django.utils import timezone

from django_supaqueue import api
from django_supaqueue import queue as q
from django_supaqueue.exceptions import InvalidOption, ReservedParameter
from django_supaqueue.models import CurrentJob, Job, JobEvent, Queue
from django_supaqueue.queue import claims
from django_supaqueue.tasks import task
from django_supaqueue.worker.connection import connect
from tests.factories import CurrentJobFactory, JobFactory, QueueFactory
from tests.helpers import wait_for
from tests.testapp import tasks
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)


def claim(conn, worker, limit=10, queues=None):
    with conn.transaction():
        jobs = q.claim(
            conn, worker_id=worker.pk, worker_name=worker.name, queues=queues, limit=limit, lease_seconds=30.0
        )
    return [j.id for j in jobs]


def succeed(conn, worker, job_id):
    attempt = Job.objects.get(pk=job_id).attempts
    q.complete(
        conn, worker_id=worker.pk, worker_name=worker.name, successes=[q.Success(job_id, attempt, None, 0)]
    )


def fail(conn, worker, job_id, **kw):
    attempt = Job.objects.get(pk=job_id).attempts
    failure = q.Failure(job_id, attempt, "ValueError", "boom", "", 0.1, **kw)
    return q.fail(conn, worker_id=worker.pk, worker_name=worker.name, failures=[failure])


def drain_in_order(conn, worker, queues=None):
    """Claim and complete one job at a time until nothing is claimable; the ids in claim order."""
    order = []
    while ids := claim(conn, worker, queues=queues):
        assert len(ids) == 1, ids
        order.append(ids[0])
        succeed(conn, worker, ids[0])
    return order


# ---------------------------------------------------------------- serial queues


def test_a_serial_queue_runs_one_job_at_a_time_in_priority_then_run_at_order(conn, worker):
    serial = QueueFactory(name="serial", serial=True)
    now = timezone.now()
    late = JobFactory(queue=serial, run_at=now - timedelta(minutes=1))
    early = JobFactory(queue=serial, run_at=now - timedelta(minutes=5))
    urgent = JobFactory(queue=serial, priority=10, run_at=now)
    [first] = claim(conn, worker)
    assert first == urgent.pk
    assert claim(conn, worker) == []  # the queue is busy: nothing else of it starts
    succeed(conn, worker, first)
    assert drain_in_order(conn, worker) == [early.pk, late.pk]


def test_other_queues_are_claimed_alongside_a_busy_serial_queue(conn, worker):
    serial = QueueFactory(name="serial", serial=True)
    JobFactory.create_batch(3, queue=serial)
    plain = JobFactory.create_batch(4)
    ids = claim(conn, worker)
    assert len(ids) == 5 and set(j.pk for j in plain) < set(ids)


def test_jobs_without_a_serial_queue_or_group_run_side_by_side(conn, worker):
    jobs = JobFactory.create_batch(6)
    assert sorted(claim(conn, worker)) == sorted(j.pk for j in jobs)
    assert not CurrentJob.objects.exclude(serial_queue=None, serial_group=None).exists()


def test_serial_heads_are_claimed_first_and_count_against_the_limit(conn, worker):
    QueueFactory(name="serial", serial=True)
    plain = JobFactory.create_batch(3, priority=50)
    head = JobFactory(queue=QueueFactory(name="serial"), priority=-50)
    ids = claim(conn, worker, limit=2)
    assert len(ids) == 2 and ids[0] == head.pk and ids[1] in {j.pk for j in plain}


def test_the_database_refuses_two_leases_on_one_serial_queue_or_group():
    CurrentJobFactory(serial_queue=7, serial_group="g")
    with pytest.raises(IntegrityError):
        CurrentJobFactory(serial_queue=7)
    with pytest.raises(IntegrityError):
        CurrentJobFactory(serial_group="g")


# ---------------------------------------------------------------- serial groups


def test_a_serial_group_runs_one_job_at_a_time_across_queues(conn, worker):
    a, b = QueueFactory(name="a"), QueueFactory(name="b")
    now = timezone.now()
    first = JobFactory(queue=b, serial_group="g", run_at=now - timedelta(minutes=3))
    second = JobFactory(queue=a, serial_group="g", run_at=now - timedelta(minutes=2))
    third = JobFactory(queue=b, serial_group="g", run_at=now - timedelta(minutes=1))
    other = JobFactory(queue=a, serial_group="h")
    plain = JobFactory(queue=a)
    assert sorted(claim(conn, worker)) == sorted([first.pk, other.pk, plain.pk])
    assert claim(conn, worker) == []
    succeed(conn, worker, other.pk)
    succeed(conn, worker, plain.pk)
    assert claim(conn, worker) == []  # "g" is still running
    succeed(conn, worker, first.pk)
    assert drain_in_order(conn, worker) == [second.pk, third.pk]


def test_a_worker_never_skips_a_group_head_in_a_queue_it_does_not_serve(conn, worker):
    a, b = QueueFactory(name="a"), QueueFactory(name="b")
    now = timezone.now()
    head = JobFactory(queue=b, serial_group="g", run_at=now - timedelta(minutes=2))
    behind = JobFactory(queue=a, serial_group="g", run_at=now - timedelta(minutes=1))
    assert claim(conn, worker, queues=["a"]) == []
    assert claim(conn, worker, queues=["b"]) == [head.pk]
    succeed(conn, worker, head.pk)
    assert claim(conn, worker, queues=["a"]) == [behind.pk]


def test_a_grouped_job_of_a_serial_queue_needs_both_locks(conn, worker):
    serial = QueueFactory(name="serial", serial=True)
    other = QueueFactory(name="other")
    running = JobFactory(queue=other, serial_group="g")
    assert claim(conn, worker) == [running.pk]
    grouped = JobFactory(queue=serial, serial_group="g")
    assert claim(conn, worker) == []  # the queue is free, the group is not
    succeed(conn, worker, running.pk)
    assert claim(conn, worker) == [grouped.pk]
    lease = CurrentJob.objects.get(job=grouped)
    assert lease.serial_queue == serial.pk and lease.serial_group == "g"


def test_a_concurrent_uncommitted_lease_makes_the_claim_wait_then_skip(worker):
    head = JobFactory(serial_group="g")
    holder = connect()
    claimer = connect()
    try:
        other = JobFactory(status=Job.Status.IN_PROGRESS, attempts=1)  # a running job of another worker
        with holder.transaction():
            holder.execute(
                "INSERT INTO supaqueue_currentjob (job_id, worker_id, attempt, started_at, lease_expires_at,"
                " serial_group) VALUES (%s, %s, 1, now(), now() + interval '1 minute', 'g')",
                (other.pk, worker.pk),
            )
            result = {}
            thread = threading.Thread(target=lambda: result.update(ids=claim(claimer, worker)))
            thread.start()
            wait_for(lambda: waiting_on_a_lock(claimer), 10)
        thread.join(10)
        assert result["ids"] == []  # the holder committed first: the group is taken
        assert Job.objects.get(pk=head.pk).status == Job.Status.PENDING
    finally:
        holder.close()
        claimer.close()


def waiting_on_a_lock(conn) -> bool:
    pid = conn.info.backend_pid
    with connection.cursor() as cur:
        cur.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cur.fetchone()
    return bool(row) and row[0] == "Lock"


# ---------------------------------------------------------------- head of line


@pytest.mark.parametrize("grouped", [False, True], ids=["queue", "group"])
def test_a_job_waiting_for_its_retry_blocks_the_jobs_behind_it(conn, worker, grouped):
    queue = QueueFactory(name="hol", serial=not grouped)
    group = "g" if grouped else None
    head = JobFactory(queue=queue, serial_group=group, run_at=timezone.now() - timedelta(minutes=2))
    behind = JobFactory(queue=queue, serial_group=group, run_at=timezone.now() - timedelta(minutes=1))
    assert claim(conn, worker) == [head.pk]
    fail(conn, worker, head.pk, retry_at=timezone.now() + timedelta(hours=1))
    assert claim(conn, worker) == []  # the head waits for its retry, and keeps its place
    q.run_now([head.pk])
    assert drain_in_order(conn, worker) == [head.pk, behind.pk]


@pytest.mark.parametrize("grouped", [False, True], ids=["queue", "group"])
def test_a_due_retry_runs_before_jobs_that_were_due_earlier(conn, worker, grouped):
    queue = QueueFactory(name="hol", serial=not grouped)
    group = "g" if grouped else None
    head = JobFactory(queue=queue, serial_group=group, run_at=timezone.now() - timedelta(minutes=2))
    [claimed] = claim(conn, worker)
    behind = JobFactory(queue=queue, serial_group=group, run_at=timezone.now() - timedelta(minutes=1))
    fail(conn, worker, claimed, retry_at=timezone.now())  # due at once, but later than "behind"
    assert drain_in_order(conn, worker) == [head.pk, behind.pk]


@pytest.mark.parametrize("grouped", [False, True], ids=["queue", "group"])
def test_without_head_of_line_later_jobs_pass_a_waiting_retry(conn, worker, grouped):
    queue = QueueFactory(name="pass", serial=not grouped, head_of_line=False)
    group = "g" if grouped else None
    head = JobFactory(queue=queue, serial_group=group, run_at=timezone.now() - timedelta(minutes=2))
    behind = JobFactory(queue=queue, serial_group=group, run_at=timezone.now() - timedelta(minutes=1))
    assert claim(conn, worker) == [head.pk]
    fail(conn, worker, head.pk, retry_at=timezone.now() + timedelta(hours=1))
    assert drain_in_order(conn, worker) == [behind.pk]
    assert Job.objects.get(pk=head.pk).status == Job.Status.PENDING


def test_a_group_follows_head_of_line_of_the_waiting_jobs_queue(conn, worker):
    strict = QueueFactory(name="strict")
    loose = QueueFactory(name="loose", head_of_line=False)
    waiting = JobFactory(queue=loose, serial_group="g", run_at=timezone.now() - timedelta(minutes=2))
    behind = JobFactory(queue=strict, serial_group="g", run_at=timezone.now() - timedelta(minutes=1))
    claim(conn, worker)
    fail(conn, worker, waiting.pk, retry_at=timezone.now() + timedelta(hours=1))
    assert claim(conn, worker) == [behind.pk]  # the loose queue's retry lets it pass


def test_a_held_retry_does_not_block_its_queue(conn, worker):
    serial = QueueFactory(name="serial", serial=True)
    head = JobFactory(queue=serial, run_at=timezone.now() - timedelta(minutes=1))
    behind = JobFactory(queue=serial)
    claim(conn, worker)
    fail(conn, worker, head.pk, retry_at=timezone.now() + timedelta(hours=1))
    q.hold([head.pk])
    assert claim(conn, worker) == [behind.pk]


# ---------------------------------------------------------------- the lock is freed by every outcome


def _success(conn, worker, job_id):
    succeed(conn, worker, job_id)


def _final_failure(conn, worker, job_id):
    [retry] = fail(conn, worker, job_id, final=True)
    assert retry.status == Job.Status.FAILED


def _cancel(conn, worker, job_id):
    """A cancelled attempt holds its queue or group until its worker reports that the body stopped."""
    assert api.cancel([job_id]) == [job_id]
    assert claim(conn, worker) == []
    assert fail(conn, worker, job_id, final=True) == []  # the job stays cancelled
    assert JobEvent.objects.filter(job_id=job_id, kind=JobEvent.Kind.STOPPED).count() == 1


def _release(conn, worker, job_id):
    attempt = Job.objects.get(pk=job_id).attempts
    assert q.release(conn, worker_id=worker.pk, worker_name=worker.name, held=[(job_id, attempt)]) == [job_id]


def _expired_lease(conn, worker, job_id):
    CurrentJob.objects.filter(job_id=job_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    [retry] = q.recover_expired(conn)
    assert retry.job_id == job_id


@pytest.mark.parametrize("grouped", [False, True], ids=["queue", "group"])
@pytest.mark.parametrize(
    "outcome",
    [_success, _final_failure, _cancel, _release, _expired_lease],
    ids=["success", "final-failure", "cancel", "release", "expired-lease"],
)
def test_every_outcome_frees_the_queue_or_group(conn, worker, outcome, grouped):
    queue = QueueFactory(name="freed", serial=not grouped, head_of_line=False)
    group = "g" if grouped else None
    head = JobFactory(queue=queue, serial_group=group, run_at=timezone.now() - timedelta(minutes=1))
    behind = JobFactory(queue=queue, serial_group=group)
    assert claim(conn, worker) == [head.pk]
    outcome(conn, worker, head.pk)
    assert not CurrentJob.objects.exists()
    expected = head.pk if outcome is _release else behind.pk  # a released job keeps its place
    assert claim(conn, worker)[:1] == [expected]


# ---------------------------------------------------------------- enqueue


def test_configured_queues_are_created_serial(settings):
    settings.SUPAQUEUE = {"QUEUES": {"ledger": {"serial": True, "head_of_line": False}}}
    tasks.noop.using(queue="ledger").enqueue()
    tasks.noop.using(queue="plain").enqueue()
    assert list(Queue.objects.order_by("name").values_list("name", "serial", "head_of_line")) == [
        ("ledger", True, False),
        ("plain", False, True),
    ]


def test_every_enqueue_door_takes_a_serial_group():
    jobs = [
        tasks.noop.enqueue(serial_group="g1"),
        tasks.noop.using(serial_group="g2").enqueue(),
        api.enqueue("tests.testapp.tasks.noop", {"i": 1}, serial_group="g3"),
        *tasks.noop.enqueue_many([{"i": 1}], serial_group="g4"),
        *api.enqueue_many("tests.testapp.tasks.noop", [{"i": 2}], serial_group="g5"),
        *tasks.noop.using(serial_group="g6").enqueue_many([{"i": 3}]),
        tasks.noop.enqueue(),
    ]
    expected = ["g1", "g2", "g3", "g4", "g5", "g6", None]
    assert [j.serial_group for j in jobs] == expected
    assert [Job.objects.get(pk=j.pk).serial_group for j in jobs] == expected


@pytest.mark.parametrize("bad", ["", 3, "x" * 256])
def test_a_serial_group_must_be_a_short_non_empty_string(bad):
    with pytest.raises(InvalidOption, match="serial_group"):
        tasks.noop.enqueue(serial_group=bad)
    assert not Job.objects.exists()


def test_serial_group_is_a_reserved_option():
    with pytest.raises(ReservedParameter, match="serial_group"):

        @task
        def clashing(serial_group):
            return serial_group


# ---------------------------------------------------------------- the claim's plan


def test_the_claim_never_scans_the_job_table_with_serial_queues_and_groups(conn, worker):
    serial = QueueFactory(name="serial", serial=True)
    tasks.noop.enqueue_many([{"i": i} for i in range(3000)])
    tasks.noop.using(queue="serial").enqueue_many([{"i": i} for i in range(1000)])
    tasks.noop.using(serial_group="g").enqueue_many([{"i": i} for i in range(1000)])
    tasks.noop.using(run_at=timedelta(days=1)).enqueue_many([{"i": i} for i in range(3000)])
    assert serial.jobs.count() == 1000
    with connection.cursor() as cur:
        cur.execute("ANALYZE supaqueue_job")
    for on_loop in (None, False, True):  # any queue; a thread lane's; an async lane's
        params = claims.claim_params(worker.pk, worker.name, None, 10, 30.0, on_loop=on_loop)
        for sql in (claims.SQL["claim_serial"], claims.SQL["claim_tenants"], claims.SQL["claim"]):
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, params).fetchall())
            assert "Seq Scan on supaqueue_job" not in plan, plan


# ---------------------------------------------------------------- several worker processes


def intervals(label):
    return sorted(Execution.objects.filter(label=label).values_list("started", "ended", "n"))


def assert_one_at_a_time(rows):
    for (_, ended, _), (started, _, _) in zip(rows, rows[1:], strict=False):
        assert ended <= started, rows


def started_order(job_ids):
    events = JobEvent.objects.filter(kind=JobEvent.Kind.STARTED, job_id__in=job_ids).order_by("id")
    return list(events.values_list("job_id", flat=True))


def test_a_serial_queue_runs_one_job_at_a_time_across_processes(worker_processes):
    QueueFactory(name="serial", serial=True)
    for _ in range(3):
        worker_processes.start("-q", "serial", "-c", "3", "--poll-interval", "0.2")
    worker_processes.wait_ready(3)  # every process competes for the jobs, committed together
    with transaction.atomic():
        jobs = [
            tasks.hold.using(queue="serial", priority=n % 3).enqueue(n=n, seconds=0.1, label="serial")
            for n in range(9)
        ]
    wait_for(lambda: Job.objects.filter(status=Job.Status.SUCCESSFUL).count() == 9, 60)
    rows = intervals("serial")
    assert len(rows) == 9
    assert_one_at_a_time(rows)
    expected = [j.pk for j in sorted(jobs, key=lambda j: (-j.priority, j.run_at, j.pk))]
    assert started_order([j.pk for j in jobs]) == expected


def test_a_serial_group_runs_one_job_at_a_time_across_queues_and_processes(worker_processes):
    """The group alternates between two queues served by different processes, which poll only
    every 30 s: each hand-over needs the finishing worker to wake the other one."""
    grouped = [
        tasks.hold.using(queue=("a", "b")[n % 2], serial_group="g").enqueue(n=n, seconds=0.1, label="g")
        for n in range(8)
    ]
    tasks.hold.using(queue="a").enqueue_many([{"n": n, "seconds": 0.1, "label": "free"} for n in range(6)])
    worker_processes.start("-q", "a", "-c", "3", "--poll-interval", "30")
    worker_processes.start("-q", "b", "-c", "3", "--poll-interval", "30")
    wait_for(lambda: Job.objects.filter(status=Job.Status.SUCCESSFUL).count() == 14, 25)
    rows = intervals("g")
    assert len(rows) == 8
    assert_one_at_a_time(rows)
    assert started_order([j.pk for j in grouped]) == [j.pk for j in grouped]
    assert len(intervals("free")) == 6
    assert len(set(Execution.objects.filter(label="g").values_list("pid", flat=True))) == 2


def test_an_idle_worker_without_serial_work_claims_a_new_grouped_job_at_once(worker_processes):
    worker_processes.start("--poll-interval", "30")
    worker_processes.wait_ready(1)
    first = tasks.noop.enqueue()  # its claim finds no serial work: the next claims leave it out
    wait_for(lambda: Job.objects.filter(pk=first.pk, status=Job.Status.SUCCESSFUL).exists(), 10)
    grouped = tasks.noop.enqueue(serial_group="g")
    wait_for(lambda: Job.objects.filter(pk=grouped.pk, status=Job.Status.SUCCESSFUL).exists(), 10)


def test_cancelling_a_running_serial_job_starts_the_next_at_once(worker_processes):
    QueueFactory(name="serial", serial=True)
    worker_processes.start("-q", "serial", "-c", "2", "--poll-interval", "30")
    worker_processes.wait_ready(1)
    with transaction.atomic():
        running = tasks.hold.using(queue="serial").enqueue(n=1, seconds=3, label="cancelled")
        behind = tasks.hold.using(queue="serial").enqueue(n=2, seconds=0.05, label="behind")
    wait_for(lambda: Job.objects.filter(pk=running.pk, status=Job.Status.IN_PROGRESS).exists(), 10)
    api.cancel([running.pk])
    wait_for(lambda: Job.objects.filter(pk=behind.pk, status=Job.Status.SUCCESSFUL).exists(), 10)


def test_a_failing_head_holds_its_serial_queue_until_its_retry_succeeds(worker_processes):
    QueueFactory(name="serial", serial=True, retry_backoff=0.2, retry_backoff_max=0.4)
    head = tasks.flaky.using(queue="serial").enqueue(n=1, failures=2)
    behind = [tasks.hold.using(queue="serial").enqueue(n=n, seconds=0.05, label="behind") for n in range(3)]
    for _ in range(2):
        worker_processes.start("-q", "serial", "-c", "2", "--poll-interval", "0.2")
    wait_for(lambda: Job.objects.filter(status=Job.Status.SUCCESSFUL).count() == 4, 60)
    assert started_order([head.pk, *(j.pk for j in behind)]) == [head.pk] * 3 + [j.pk for j in behind]


# ---------------------------------------------------------------- admin


def test_the_queue_screen_edits_serial_and_head_of_line(admin_client):
    ledger = QueueFactory(name="ledger")
    url = reverse("admin:supaqueue_queue_change", args=[ledger.pk])
    form = admin_client.get(url).context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None and k not in ("serial", "head_of_line")}
    data["http_headers"] = "{}"
    response = admin_client.post(url, {**data, "serial": "on"})
    assert response.status_code == 302, response.context["adminform"].form.errors
    ledger.refresh_from_db()
    assert ledger.serial and not ledger.head_of_line


def test_the_job_screens_show_and_find_a_serial_group(admin_client):
    grouped = JobFactory(serial_group="account:42")
    JobFactory()
    page = admin_client.get(reverse("admin:supaqueue_job_change", args=[grouped.pk])).content.decode()
    assert "account:42" in page
    found = admin_client.get(reverse("admin:supaqueue_job_changelist"), {"q": "account:42"})
    assert [j.pk for j in found.context["cl"].result_list] == [grouped.pk]

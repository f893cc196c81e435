"""Workers in other languages: supaqueue_get_job, _complete_job, _fail_job and _heartbeat.

A SQL worker is driven here as a Node or Go worker would drive it, through a
plain psycopg connection (autocommit); its jobs are read back through the ORM,
as the admin reads them. The functions copy the Python worker's statements, one
job at a time: a test here holds their choices to the Python claim's step by
step, and test_sql_copies.py their text to the originals.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import psycopg
import pytest
from django.urls import reverse
from django.utils import timezone
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from django_supaqueue import api, conf
from django_supaqueue import queue as q
from django_supaqueue.models import CurrentJob, Job, JobEvent, Worker
from tests.factories import JobFactory, QueueFactory
from tests.helpers import database_url, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SQL_WORKER_ERROR = "django_supaqueue.exceptions.SQLWorkerError"


@pytest.fixture
def sql() -> Iterator[psycopg.Connection]:
    """A connection as a worker outside Django has one: plain psycopg, autocommit."""
    with psycopg.connect(database_url(), autocommit=True, row_factory=dict_row) as conn:
        yield conn


def add_job(sql: psycopg.Connection, task: str = "node.send", **named: object) -> int:
    arguments = "".join(f", {name} => %({name})s" for name in named)
    return sql.execute(
        f"SELECT (supaqueue_add_job(%(task)s{arguments})).id", {"task": task, **named}
    ).fetchone()["id"]


def get_job(
    sql: psycopg.Connection,
    worker: str = "node-1",
    queues: list[str] | None = None,
    tasks: list[str] | None = None,
) -> dict | None:
    """``SELECT * FROM supaqueue_get_job(…)``: the job claimed, or None (the function's NULL)."""
    row = sql.execute("SELECT * FROM supaqueue_get_job(%s, %s, %s)", [worker, queues, tasks]).fetchone()
    return row if row["id"] is not None else None


def complete(sql: psycopg.Connection, job_id: int, worker: str = "node-1", result: object = None) -> bool:
    value = None if result is None else Jsonb(result)
    return sql.execute("SELECT supaqueue_complete_job(%s, %s, %s) AS ok", [job_id, worker, value]).fetchone()[
        "ok"
    ]


def fail(sql: psycopg.Connection, job_id: int, message: str | None, worker: str = "node-1") -> bool:
    return sql.execute("SELECT supaqueue_fail_job(%s, %s, %s) AS ok", [job_id, worker, message]).fetchone()[
        "ok"
    ]


def heartbeat(sql: psycopg.Connection, worker: str = "node-1") -> int:
    return sql.execute("SELECT supaqueue_heartbeat(%s) AS n", [worker]).fetchone()["n"]


def history(job_id: int) -> list[tuple]:
    events = JobEvent.objects.filter(job_id=job_id).order_by("id")
    return [(e.kind, e.attempt, e.worker_name, e.error_class) for e in events]


# ----------------------------------------------------------------------------------- the loop


def test_a_sql_worker_claims_a_job_completes_it_and_its_history_shows_it(sql, admin_client):
    job_id = add_job(sql, payload=Jsonb({"to": 1}), queue_name="node")
    claimed = get_job(sql, "node-1", ["node"])
    assert (claimed["id"], claimed["status"], claimed["attempts"], claimed["payload"]) == (
        job_id,
        "in_progress",
        1,
        {"to": 1},
    )
    lease = CurrentJob.objects.select_related("worker").get(job_id=job_id)
    assert (lease.worker.name, lease.attempt) == ("node-1", 1)
    assert complete(sql, job_id, "node-1", {"sent": True}) is True
    job = Job.objects.get(pk=job_id)
    assert (job.status, job.result, job.last_error) == ("successful", {"sent": True}, "")
    assert job.finished_at is not None and not CurrentJob.objects.exists()
    assert history(job_id) == [("started", 1, "node-1", ""), ("succeeded", 1, "node-1", "")]
    assert JobEvent.objects.get(job_id=job_id, kind="succeeded").duration >= 0
    page = admin_client.get(reverse("admin:supaqueue_job_change", args=[job_id])).content.decode()
    assert "node-1" in page and "Succeeded" in page


def test_get_job_registers_its_caller_as_a_worker_once(sql):
    get_job(sql, "node-1", ["a", "b"])
    get_job(sql, "node-1", ["a", "b"])
    worker = Worker.objects.get(name="node-1")
    assert (worker.queues, worker.concurrency) == (["a", "b"], 1)
    assert Worker.objects.count() == 1


def test_get_job_returns_null_when_nothing_is_runnable(sql):
    JobFactory(run_at=timezone.now() + timedelta(hours=1))
    JobFactory(enabled=False)
    JobFactory(queue=QueueFactory(name="paused", paused=True))
    JobFactory(status="waiting", waiting_for=1)
    assert sql.execute("SELECT supaqueue_get_job('node-1') IS NULL AS none").fetchone()["none"] is True


def test_get_job_refuses_a_worker_without_a_name(sql):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"^worker_name\b"):
        get_job(sql, "")


def test_get_job_takes_the_highest_priority_then_the_oldest(sql):
    now = timezone.now()
    low = JobFactory(priority=-5, run_at=now - timedelta(hours=1))
    late = JobFactory(priority=5, run_at=now - timedelta(minutes=1))
    early = JobFactory(priority=5, run_at=now - timedelta(minutes=2))
    assert [get_job(sql)["id"] for _ in range(3)] == [early.pk, late.pk, low.pk]


def test_get_job_takes_only_the_queues_and_tasks_it_is_given(sql):
    mine = JobFactory(queue=QueueFactory(name="mine"), task_name="node.send")
    JobFactory(queue=QueueFactory(name="theirs"), task_name="node.send")
    JobFactory(queue=QueueFactory(name="mine"), task_name="app.tasks.other")
    assert get_job(sql, queues=["mine"], tasks=["node.send"])["id"] == mine.pk
    assert get_job(sql, queues=["mine"], tasks=["node.send"]) is None
    assert get_job(sql, queues=[], tasks=[])["id"] != mine.pk  # empty lists: any queue, any task


# --------------------------------------------------------------------------------- failures


def test_fail_job_retries_after_the_queues_back_off(sql):
    QueueFactory(name="node", retry_backoff=100.0)
    job_id = add_job(sql, queue_name="node")
    get_job(sql)
    before = timezone.now()
    assert fail(sql, job_id, "smtp said no") is True
    job = Job.objects.get(pk=job_id)
    assert job.status == "pending" and job.last_error == f"{SQL_WORKER_ERROR}: smtp said no"
    assert before + timedelta(seconds=49) < job.run_at < before + timedelta(seconds=101)
    retried = JobEvent.objects.get(job_id=job_id, kind="retried")
    assert (retried.error_class, retried.error_message, retried.retry_at) == (
        SQL_WORKER_ERROR,
        "smtp said no",
        job.run_at,
    )


def test_without_settings_the_back_off_is_the_packages(sql):
    job_id = add_job(sql)
    get_job(sql)
    before = timezone.now()
    fail(sql, job_id, "no")
    first = conf.DEFAULTS["RETRY_BACKOFF"]
    assert before + timedelta(seconds=first / 2 - 0.1) < Job.objects.get(pk=job_id).run_at
    assert Job.objects.get(pk=job_id).run_at < before + timedelta(seconds=first + 0.1)


def test_fail_job_fails_for_good_when_no_attempts_are_left(sql):
    sql.execute("SET supaqueue.retry_backoff = '0'")
    job_id = add_job(sql, max_attempts=2)
    for message in ("first", "second"):
        assert get_job(sql)["id"] == job_id
        assert fail(sql, job_id, message) is True
    job = Job.objects.get(pk=job_id)
    assert (job.status, job.attempts) == ("failed", 2) and job.finished_at is not None
    assert history(job_id) == [
        ("started", 1, "node-1", ""),
        ("retried", 1, "node-1", SQL_WORKER_ERROR),
        ("started", 2, "node-1", ""),
        ("failed", 2, "node-1", SQL_WORKER_ERROR),
    ]


def test_a_failure_without_a_message_still_ends_the_attempt(sql):
    job_id = add_job(sql)
    get_job(sql)
    assert fail(sql, job_id, None) is True
    assert Job.objects.get(pk=job_id).status == "pending" and not CurrentJob.objects.exists()


def chain() -> list[Job]:
    first = q.enqueue_job(q.JobSpec(task_name="node.first", payload={}))
    then = q.enqueue_job(q.JobSpec(task_name="node.then", payload={}, depends_on=[first.pk]))
    return [first, then]


def test_a_dependency_that_succeeds_through_sql_releases_its_dependent(sql):
    first, then = chain()
    assert get_job(sql)["id"] == first.pk
    assert get_job(sql) is None  # waiting for its dependency
    complete(sql, first.pk)
    assert get_job(sql)["id"] == then.pk


def test_a_dependency_that_fails_for_good_through_sql_cancels_its_dependent(sql):
    first, then = chain()
    Job.objects.filter(pk=first.pk).update(max_attempts=1)
    get_job(sql)
    fail(sql, first.pk, "gone")
    then.refresh_from_db()
    assert then.status == "cancelled"


# --------------------------------------------------------------------------- leases and fencing


def test_heartbeat_renews_every_lease_of_its_worker_and_no_other(sql):
    sql.execute("SET supaqueue.lease_duration = '5'")
    mine = [add_job(sql), add_job(sql)]
    theirs = add_job(sql)
    get_job(sql, "node-1")
    get_job(sql, "node-1")
    get_job(sql, "node-2")
    expiry = dict(CurrentJob.objects.values_list("job_id", "lease_expires_at"))
    sql.execute("SET supaqueue.lease_duration = '60'")
    assert heartbeat(sql, "node-1") == 2
    renewed = dict(CurrentJob.objects.values_list("job_id", "lease_expires_at"))
    assert all(renewed[j] > expiry[j] + timedelta(seconds=50) for j in mine)
    assert renewed[theirs] == expiry[theirs]
    assert heartbeat(sql, "nobody") == 0


def recover_after_expiry(sql: psycopg.Connection, conn: psycopg.Connection) -> int:
    """A job claimed with a lease of 0.1 s, left to expire, recovered as a Python worker recovers it."""
    sql.execute("SET supaqueue.lease_duration = '0.1'")
    job_id = add_job(sql)
    get_job(sql)
    time.sleep(0.3)
    assert [r.job_id for r in q.recover_expired(conn)] == [job_id]
    return job_id


def test_a_late_complete_after_the_lease_was_recovered_returns_false_and_changes_nothing(sql, conn):
    job_id = recover_after_expiry(sql, conn)
    before = Job.objects.filter(pk=job_id).values().get()
    events = history(job_id)
    assert events[-1] == ("retried", 1, "node-1", "django_supaqueue.exceptions.WorkerLost")
    assert complete(sql, job_id, "node-1", {"late": True}) is False
    assert fail(sql, job_id, "late too") is False
    assert Job.objects.filter(pk=job_id).values().get() == before
    assert history(job_id) == events


def test_another_workers_complete_or_fail_changes_nothing(sql):
    job_id = add_job(sql)
    get_job(sql, "node-1")
    assert complete(sql, job_id, "node-2") is False and fail(sql, job_id, "x", "node-2") is False
    assert Job.objects.get(pk=job_id).status == "in_progress"


def test_a_job_cancelled_while_a_sql_worker_runs_it_records_the_attempt_as_stopped(sql):
    job_id = add_job(sql)
    get_job(sql)
    api.cancel([job_id])
    assert complete(sql, job_id, "node-1", {"too": "late"}) is False
    job = Job.objects.get(pk=job_id)
    assert job.status == "cancelled" and job.result is None and not CurrentJob.objects.exists()
    assert [kind for kind, *_ in history(job_id)] == ["started", "cancelled", "stopped"]


def test_a_sql_worker_that_stops_heartbeating_is_recovered_by_runworkers(sql, worker_processes):
    sql.execute("SET supaqueue.lease_duration = '1'")
    job_id = add_job(sql, "tests.testapp.tasks.noop")
    get_job(sql, "node-1")
    proc = worker_processes.start("--name", "python-1")
    wait_for(lambda: Job.objects.get(pk=job_id).status == "successful", timeout=30)
    assert history(job_id) == [
        ("started", 1, "node-1", ""),
        ("retried", 1, "node-1", "django_supaqueue.exceptions.WorkerLost"),
        ("started", 2, "python-1", ""),
        ("succeeded", 2, "python-1", ""),
    ], worker_processes.log(proc)


# ------------------------------------------------------------------- caps, serial work, rates


def test_a_concurrency_cap_holds_for_sql_workers(sql):
    capped = QueueFactory(name="capped", concurrency_limit=1)
    a, b = JobFactory(queue=capped), JobFactory(queue=capped)
    assert get_job(sql, "node-1")["id"] == a.pk
    assert get_job(sql, "node-2") is None
    complete(sql, a.pk, "node-1")
    assert get_job(sql, "node-2")["id"] == b.pk


def test_a_serial_queue_runs_one_job_at_a_time_and_its_retry_keeps_its_place(sql):
    serial = QueueFactory(name="ledger", serial=True, retry_backoff=3600.0)
    a, b = JobFactory(queue=serial), JobFactory(queue=serial)
    assert get_job(sql, "node-1")["id"] == a.pk
    assert get_job(sql, "node-2") is None
    fail(sql, a.pk, "retry me", "node-1")
    assert get_job(sql, "node-2") is None  # a waits for its retry at the head of the line
    api.reschedule([a], run_at=timezone.now())
    assert get_job(sql, "node-2")["id"] == a.pk
    complete(sql, a.pk, "node-2")
    assert get_job(sql, "node-1")["id"] == b.pk


def test_a_serial_group_runs_one_job_at_a_time_across_queues(sql):
    a = JobFactory(queue=QueueFactory(name="one"), serial_group="account:1")
    b = JobFactory(queue=QueueFactory(name="two"), serial_group="account:1")
    other = JobFactory(queue=QueueFactory(name="two"), priority=-1)
    assert get_job(sql, "node-1")["id"] == a.pk
    assert get_job(sql, "node-2", ["two"])["id"] == other.pk
    assert get_job(sql, "node-2", ["two"]) is None
    complete(sql, a.pk, "node-1")
    assert get_job(sql, "node-2", ["two"])["id"] == b.pk


def test_a_rate_limit_holds_for_sql_workers(sql):
    limited = QueueFactory(name="limited", rate_limit=1, rate_period=60.0)
    a, _b = JobFactory(queue=limited), JobFactory(queue=limited)
    assert get_job(sql, "node-1")["id"] == a.pk
    complete(sql, a.pk, "node-1")
    assert get_job(sql, "node-1") is None


def test_an_attempt_that_ends_wakes_the_workers_waiting_for_its_room(sql):
    capped = QueueFactory(name="capped", concurrency_limit=1)
    job = JobFactory(queue=capped)
    get_job(sql)
    with psycopg.connect(database_url(), autocommit=True) as listener:
        listener.execute(f"LISTEN {q.CHANNEL}")
        complete(sql, job.pk)
        assert {n.payload for n in listener.notifies(timeout=1.0)} == {"capped 0"}


def test_a_retry_tells_the_listening_workers_when_it_is_due(sql):
    job_id = add_job(sql, queue_name="node")
    get_job(sql)
    with psycopg.connect(database_url(), autocommit=True) as listener:
        listener.execute(f"LISTEN {q.CHANNEL}")
        fail(sql, job_id, "later")
        [(name, epoch)] = [n.payload.split() for n in listener.notifies(timeout=1.0)]
    assert name == "node" and float(epoch) == pytest.approx(Job.objects.get(pk=job_id).run_at.timestamp())


def test_sql_workers_racing_over_a_queue_run_every_job_once(sql):
    sql.execute(
        "SELECT supaqueue_add_job('node.n', jsonb_build_object('n', n)) FROM generate_series(1, 200) n"
    )

    def work(name: str) -> list[int]:
        done = []
        with psycopg.connect(database_url(), autocommit=True, row_factory=dict_row) as own:
            while (job := get_job(own, name)) is not None:
                assert complete(own, job["id"], name, {"by": name})
                done.append(job["id"])
        return done

    with ThreadPoolExecutor(4) as pool:
        runs = [job_id for done in pool.map(work, [f"node-{i}" for i in range(4)]) for job_id in done]
    assert len(runs) == len(set(runs)) == 200
    assert Job.objects.filter(status="successful").count() == 200
    assert JobEvent.objects.filter(kind="started").count() == 200


# ------------------------------------------------------------------ the same as the Python worker


def test_get_job_takes_what_the_python_claim_would_take_step_by_step(sql, conn, worker):
    now = timezone.now()
    capped = QueueFactory(name="capped", concurrency_limit=2)
    serial = QueueFactory(name="serial", serial=True)
    plain = QueueFactory(name="plain")
    for n in range(4):
        JobFactory(queue=capped, priority=n % 3, run_at=now - timedelta(seconds=n))
        JobFactory(queue=serial, priority=-n, run_at=now - timedelta(seconds=10 - n))
        JobFactory(queue=plain, priority=(n * 7) % 5 - 2, run_at=now - timedelta(seconds=n * 3))
        JobFactory(queue=plain, serial_group=f"g{n % 2}", priority=n, run_at=now - timedelta(seconds=n))
    JobFactory(queue=plain, priority=100, run_at=now + timedelta(hours=1))
    JobFactory(queue=plain, priority=100, enabled=False)
    taken = []
    while True:
        with conn.transaction(force_rollback=True):
            python = q.claim(
                conn, worker_id=worker.pk, worker_name="w1", queues=None, limit=1, lease_seconds=30
            )
        job = get_job(sql)
        assert (job["id"] if job else None) == (python[0].id if python else None), taken
        if job is None:
            break
        taken.append(job["id"])
        if len(taken) % 2:
            complete(sql, job["id"])
    assert len(set(taken)) == len(taken) > 8
    blocked = Job.objects.filter(status="pending", enabled=True, run_at__lte=timezone.now())
    assert blocked.exists()  # behind the running jobs of capped, serial and grouped work, for both


def test_a_process_without_django_runs_a_worker_loop_through_psycopg(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import psycopg

            with psycopg.connect(sys.argv[1], autocommit=True) as db:
                db.execute("SELECT supaqueue_add_job('node.double', '{\\"n\\": 21}', queue_name => 'node')")
                while True:
                    job = db.execute(
                        "SELECT id, payload FROM supaqueue_get_job('plain-1', ARRAY['node'])"
                    ).fetchone()
                    if job[0] is None:
                        break
                    result = psycopg.types.json.Jsonb({"doubled": job[1]["n"] * 2})
                    db.execute("SELECT supaqueue_complete_job(%s, 'plain-1', %s)", [job[0], result])
            assert not any(name.startswith("django") for name in sys.modules)
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script), database_url()], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    job = Job.objects.get(task_name="node.double")
    assert (job.status, job.result) == ("successful", {"doubled": 42})

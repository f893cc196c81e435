"""Through a real PgBouncer (Debian's, 1.18) in transaction mode, with the settings the docs give.

docs/howto/many-hosts.md says what a project behind PgBouncer older than 1.21
sets: prepared statements off (``OPTIONS["prepare_threshold"] = None``) and
either a direct LISTEN_DATABASE or ``LISTEN = False``. Here the test process's
Django connection (enqueue calls, the admin) and the workers' connections go
through a pgbouncer started on a free port, and each test checks on
pgbouncer's admin console that the traffic really went through it.
Skipped when pgbouncer is not installed; CI installs it and sets
SUPAQUEUE_REQUIRE_PGBOUNCER, under which a missing pgbouncer fails instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from django.db import connection, transaction
from django.db.models import Count
from django.urls import reverse

from django_supaqueue import cancel
from django_supaqueue.models import Job, JobEvent, ScheduleTick
from tests import pgbouncer
from tests.factories import ScheduleFactory
from tests.helpers import ROOT, WorkerProcesses, wait_for
from tests.testapp import tasks
from tests.testapp.models import Execution

pytestmark = [pytest.mark.pgbouncer, pytest.mark.django_db(transaction=True)]

#: What every worker process here runs with: prepared statements off (PgBouncer < 1.21).
NO_PREPARE = {"SUPAQUEUE_TEST_NO_PREPARE": "1"}


@pytest.fixture(scope="module")
def bouncer(django_db_setup, django_db_blocker) -> Iterator[pgbouncer.PgBouncer]:
    """One pgbouncer for the module, in front of the test database; stopped before that is dropped."""
    executable = pgbouncer.find()
    if executable is None:
        if os.environ.get("SUPAQUEUE_REQUIRE_PGBOUNCER"):
            pytest.fail("SUPAQUEUE_REQUIRE_PGBOUNCER is set but pgbouncer is not installed")
        pytest.skip("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    with django_db_blocker.unblock():
        server = dict(connection.settings_dict)
    proxy = pgbouncer.PgBouncer(executable, server)
    try:
        proxy.start()
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def through(bouncer) -> Iterator[pgbouncer.PgBouncer]:
    """The test's own Django connection goes through pgbouncer too."""
    with bouncer.django():
        yield bouncer


@pytest.fixture
def workers(tmp_path, bouncer) -> Iterator[WorkerProcesses]:
    procs = WorkerProcesses(tmp_path)
    yield procs
    procs.stop_all()


def start_workers(
    workers: WorkerProcesses, bouncer: pgbouncer.PgBouncer, count: int, *args: str, **env: str
) -> list[subprocess.Popen]:
    """``count`` runworkers processes whose DATABASES["default"] is pgbouncer."""
    env = {"DATABASE_URL": bouncer.url(), **NO_PREPARE, **env}
    procs = [workers.start(*args, env=env) for _ in range(count)]
    workers.wait_ready(count)
    return procs


def server_sessions(application_name: str) -> int:
    """Server sessions of the test database with that name (pgbouncer's own show their client's last)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            [application_name],
        )
        return cursor.fetchone()[0]


# --------------------------------------------------------------------------- enqueue from Django


def test_enqueue_in_autocommit_in_atomic_and_many_through_transaction_pooling(through):
    before = through.transactions()
    single = tasks.add.enqueue(a=1, b=2)  # autocommit: the enqueue's own statement
    with transaction.atomic():
        inside = tasks.add.enqueue(a=3, b=4)
        many = tasks.record.enqueue_many([{"n": n} for n in range(50)])
    with pytest.raises(RuntimeError), transaction.atomic():
        tasks.add.enqueue(a=5, b=6)
        raise RuntimeError("rolled back with the caller's transaction")
    again = [tasks.add.enqueue(a=n, b=n) for n in range(20)]  # many client statements, few server connections
    assert through.transactions() - before >= 24
    ids = {single.pk, inside.pk, *(job.pk for job in many), *(job.pk for job in again)}
    assert set(Job.objects.values_list("pk", flat=True)) == ids
    assert Job.objects.get(pk=inside.pk).payload == {"a": 3, "b": 4}


# --------------------------------------------------------------------------- workers


def test_two_worker_processes_woken_by_notify_on_a_direct_listen_database_run_each_job_once(through, workers):
    """LISTEN_DATABASE is a direct connection: the poll (30 s) never has to wake them."""
    listen = {"SUPAQUEUE_TEST_LISTEN_DATABASE_URL": through.direct_url()}
    procs = start_workers(workers, through, 2, "-c", "3", "--poll-interval", "30", **listen)
    wait_for(lambda: "supaqueue worker" in through.client_names(), 10)  # claims go through pgbouncer
    wait_for(lambda: server_sessions("supaqueue listener") == 2, 10)
    assert "supaqueue listener" not in through.client_names()  # LISTEN goes straight to the server
    time.sleep(0.3)  # idle: only a notification can wake them now
    first = tasks.started_at.enqueue()
    committed = time.time()
    wait_for(lambda: Job.objects.filter(pk=first.pk, status=Job.Status.SUCCESSFUL).exists(), 10)
    first.refresh_from_db()
    assert first.result - committed < 5.0  # woken, not polled (bounds for a busy 2-core machine)
    # Long enough (2 s for one process alone) that both take a share.
    tasks.hold.enqueue_many([{"n": n, "seconds": 0.05, "label": "drain"} for n in range(120)])
    wait_for(lambda: Job.objects.filter(status=Job.Status.SUCCESSFUL).count() == 121, 30)
    runs = Execution.objects.filter(label="drain").values("n").annotate(c=Count("id"))
    assert runs.count() == 120 and {r["c"] for r in runs} == {1}
    succeeded = JobEvent.objects.filter(kind=JobEvent.Kind.SUCCEEDED).values("job").annotate(c=Count("id"))
    assert succeeded.count() == 121 and {r["c"] for r in succeeded} == {1}
    pids = set(Execution.objects.filter(label="drain").values_list("pid", flat=True))
    assert len(pids) == 2, [workers.log(proc) for proc in procs]


def test_a_running_job_is_cancelled_and_a_schedule_fires_once_per_tick(through, workers):
    ScheduleFactory(name="every-second", cron="* * * * * *")
    start_workers(workers, through, 2, "-c", "2", SUPAQUEUE_TEST_LISTEN_DATABASE_URL=through.direct_url())
    napping = tasks.nap.enqueue(n=1, seconds=10)
    wait_for(lambda: Execution.objects.filter(label="nap").exists(), 10)
    started = time.monotonic()
    assert cancel([napping]) == [napping.pk]
    wait_for(lambda: Execution.objects.filter(label="nap", ended__isnull=False).exists(), 8)
    assert time.monotonic() - started < 5.0  # interrupted: the cancel notification reached the worker
    napping.refresh_from_db()
    assert napping.status == Job.Status.CANCELLED
    wait_for(lambda: ScheduleTick.objects.count() >= 3, 30)
    workers.stop_all()
    fired = list(ScheduleTick.objects.values_list("tick_at", "job_id"))
    assert len({tick for tick, _ in fired}) == len(fired) == len({job for _, job in fired})
    assert Job.objects.filter(task_name="tests.testapp.tasks.noop").count() == len(fired)


def test_with_listen_off_a_worker_polls_through_transaction_pooling(through, workers):
    (proc,) = start_workers(
        workers, through, 1, "-c", "4", "--poll-interval", "0.2", SUPAQUEUE_TEST_LISTEN="0"
    )
    tasks.record.enqueue_many([{"n": n, "label": "polled"} for n in range(20)])
    wait_for(lambda: Execution.objects.filter(label="polled").count() == 20, 10)
    assert "supaqueue worker" in through.client_names()
    assert server_sessions("supaqueue listener") == 0
    assert "supaqueue listener" not in through.client_names()
    assert "LISTEN" not in workers.log(proc)  # nothing complained


# --------------------------------------------------------------------------- the admin


def test_the_admin_dashboard_and_its_data_through_transaction_pooling(through, admin_client):
    tasks.add.enqueue(a=1, b=2)
    before = through.transactions()
    page = admin_client.get(reverse("admin:supaqueue_dashboard_changelist"))
    assert page.status_code == 200 and "default" in page.content.decode()
    data = admin_client.get(reverse("admin:supaqueue_dashboard_data")).json()
    assert {row["name"]: row["counts"]["pending"]["value"] for row in data["queues"]} == {"default": 1}
    assert through.transactions() - before >= 2


# --------------------------------------------------------------------------- the system check


def check(bouncer: pgbouncer.PgBouncer, mode: str = "transaction", **env: str) -> subprocess.CompletedProcess:
    """``manage.py check --database default`` in a project whose database is pgbouncer in ``mode``."""
    return subprocess.run(
        [sys.executable, "-m", "django", "check", "--database", "default", "--settings=tests.settings"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": bouncer.url(mode), **env},
    )


def test_the_check_warns_of_listen_and_prepared_statements_through_transaction_pooling(bouncer):
    out = check(bouncer)
    assert out.returncode == 0, out.stderr
    assert "supaqueue.W040" in out.stderr and "supaqueue.W041" in out.stderr


def test_the_check_is_quiet_with_the_documented_settings(bouncer):
    for env in ({"SUPAQUEUE_TEST_LISTEN_DATABASE_URL": bouncer.direct_url()}, {"SUPAQUEUE_TEST_LISTEN": "0"}):
        out = check(bouncer, **NO_PREPARE, **env)
        assert out.returncode == 0 and "supaqueue." not in out.stdout + out.stderr, out.stderr


def test_the_check_accepts_session_pooling_and_refuses_statement_pooling(bouncer):
    session = check(bouncer, "session")
    assert session.returncode == 0 and "supaqueue." not in session.stdout + session.stderr, session.stderr
    statement = check(bouncer, "statement")
    assert statement.returncode != 0 and "supaqueue.E040" in statement.stderr

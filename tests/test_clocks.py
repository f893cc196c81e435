"""Hosts whose wall clocks are 10 minutes ahead or behind behave as a correct one (issue 21, Clocks).

Every decision hosts share goes by the database's clock: run_at, leases and
heartbeats, back-off, rate windows, schedule ticks and pruning. These tests run
real ``runworkers`` processes, and producer scripts, under libfaketime (Debian's
``faketime``) beside the test process's correct clock, against one database,
and time what they do by the database. ``FAKETIME_DONT_FAKE_MONOTONIC`` keeps
their monotonic clocks right, as on a real host whose wall clock is wrong.

Skipped where libfaketime is not installed; CI installs it and sets
SUPAQUEUE_REQUIRE_FAKETIME in one pass, under which its absence fails.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import textwrap
from datetime import timedelta

import pytest
from django.db import connection

from django_supaqueue.models import Job, JobEvent, Queue, Schedule, ScheduleTick
from tests.helpers import ROOT, database_url, wait_for
from tests.testapp import tasks

LIBFAKETIME = next(
    iter(
        sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
        + sorted(glob.glob("/usr/local/lib/faketime/libfaketime.so.1"))
    ),
    None,
)
if LIBFAKETIME is None:
    _why = "libfaketime is not installed (apt-get install faketime)"
    if os.environ.get("SUPAQUEUE_REQUIRE_FAKETIME"):
        pytest.fail(f"SUPAQUEUE_REQUIRE_FAKETIME is set, but {_why}", pytrace=False)
    pytest.skip(_why, allow_module_level=True)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.faketime]

SKEW = 600.0  # seconds: the 10 minutes of the issue
#: Seconds a timer-driven start may come after its run_at: the loop's wake-up and its claim, on a
#: loaded machine. A timer set by a skewed wall clock is 10 minutes off, or falls back on the poll.
ON_TIME = 3.0


#: libfaketime 0.9.10, monotonic clock left alone, refuses (EINVAL) the absolute CLOCK_MONOTONIC
#: deadline that Python's time.sleep gives clock_nanosleep. A host with a wrong wall clock sleeps
#: fine, so the skewed processes sleep on select() instead (loaded by Python as sitecustomize).
SLEEP_SHIM = """
import select
import time


def _sleep(seconds):
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        select.select([], [], [], left)


time.sleep = _sleep
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> str:
    hook = tmp_path_factory.mktemp("faketime_shim")
    (hook / "sitecustomize.py").write_text(SLEEP_SHIM)
    return str(hook)


def skewed(offset: str, shim: str, **extra: str) -> dict[str, str]:
    """The environment of a process whose wall clock is ``offset`` ("+10m", "-10m") off."""
    return {
        "LD_PRELOAD": LIBFAKETIME,
        "FAKETIME": offset,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "PYTHONPATH": f"{shim}:{ROOT}",
        **extra,
    }


#: Worker settings that leave no fallback to hide a wrong timer: a poll only every 30 s.
WORKER_ENV = {"SUPAQUEUE_POLL_INTERVAL": "30"}


def db_now():
    with connection.cursor() as cur:
        cur.execute("SELECT clock_timestamp()")
        return cur.fetchone()[0]


#: Rate-limited queues, one per worker: one start per half second, so that each claim fills the
#: window and each window's end is a timer (a worker of one slot claims one job at a time).
RATED = ("ahead_rated", "behind_rated", "real_rated")


def most_in_one_window(times: list[float], width: float) -> int:
    return max(sum(1 for t in times if start <= t < start + width) for start in times)


def finish(worker_processes) -> None:
    """Wait until every job the workers serve has succeeded (the schedule's wait in "default")."""
    served = Job.objects.exclude(queue__name="default")
    try:
        wait_for(lambda: not served.exclude(status=Job.Status.SUCCESSFUL).exists(), 20)
    except AssertionError:
        left = served.exclude(status=Job.Status.SUCCESSFUL).values_list(
            "id", "queue__name", "task_name", "status", "attempts", "run_at"
        )
        logs = "\n".join(worker_processes.log(p)[-3000:] for p in worker_processes.procs)
        raise AssertionError(f"not done: {sorted(left)}\n{logs}") from None


def test_workers_with_skewed_clocks_go_by_the_databases_clock(worker_processes, shim):
    for name in ("ahead", "behind", "real"):
        Queue.objects.create(name=name, retry_backoff=2.0, retry_backoff_max=2.0)
    for name in RATED:
        Queue.objects.create(name=name, rate_limit=1, rate_period=0.5)
    schedule = Schedule.objects.create(
        name="every-2s",
        task_name="tests.testapp.tasks.noop",
        cron="*/2 * * * * *",
        missed=Schedule.Missed.CATCH_UP,  # a tick a loaded machine fires late is still fired, late
    )
    worker_processes.start(
        "-q", "ahead", "-q", "ahead_rated", "-c", "1", env=skewed("+10m", shim, **WORKER_ENV)
    )
    worker_processes.start(
        "-q", "behind", "-q", "behind_rated", "-c", "1", env=skewed("-10m", shim, **WORKER_ENV)
    )
    worker_processes.start("-q", "real", "-q", "real_rated", "-c", "1", env=WORKER_ENV)
    worker_processes.wait_ready(3)
    ready = db_now()

    # The workers' wall clocks really are off: a body reports its time.time().
    clocks = {q: tasks.started_at.using(queue=q).enqueue() for q in ("ahead", "behind", "real")}
    wait_for(lambda: Job.objects.filter(status=Job.Status.SUCCESSFUL).count() == 3)
    offsets = {}
    for q, job in clocks.items():
        job.refresh_from_db()
        offsets[q] = job.result - job.started_at.timestamp()
    assert offsets["ahead"] == pytest.approx(SKEW, abs=5)
    assert offsets["behind"] == pytest.approx(-SKEW, abs=5)
    assert offsets["real"] == pytest.approx(0, abs=5)

    # One thing at a time: a claim loop keeps one timer, the earliest due time it was told of, and
    # forgets the later ones when it fires (the poll picks them up), so timers must not overlap here.
    delayed = {q: tasks.record.using(queue=q, run_at=timedelta(seconds=2)).enqueue(n=1) for q in clocks}
    finish(worker_processes)
    retried = {q: tasks.flaky.using(queue=q).enqueue(n=n, failures=1) for n, q in enumerate(clocks)}
    finish(worker_processes)
    for q in RATED:
        tasks.noop.enqueue_many([{"i": i} for i in range(5)], queue=q)
    finish(worker_processes)
    # Held past a few heartbeats (each second): a lease read by a clock 10 minutes ahead would
    # look 10 minutes old to the worker ahead, whose chores recover expired leases.
    held = tasks.hold.using(queue="behind").enqueue(n=2, seconds=3)
    finish(worker_processes)

    for q, job in delayed.items():  # not early on the clock ahead, not late on the one behind
        job.refresh_from_db()
        assert timedelta(0) <= job.started_at - job.run_at < timedelta(seconds=ON_TIME), q
    for q, job in retried.items():  # the back-off waited, by the database's clock
        job.refresh_from_db()
        retry = JobEvent.objects.get(job=job, kind=JobEvent.Kind.RETRIED)
        assert job.attempts == 2 and retry.retry_at - retry.at >= timedelta(seconds=1), q
        assert timedelta(0) <= job.started_at - retry.retry_at < timedelta(seconds=ON_TIME), q
    # The lease of the worker behind was never taken for expired by the worker ahead.
    held.refresh_from_db()
    assert held.attempts == 1 and not JobEvent.objects.filter(job=held).exclude(error_class="").exists()
    for q in RATED:  # the window holds, and its end wakes the worker on time
        starts = sorted(j.started_at.timestamp() for j in Job.objects.filter(queue__name=q))
        spread = (q, [round(t - starts[0], 3) for t in starts])
        assert most_in_one_window(starts, 0.45) <= 1, spread
        assert starts[-1] - starts[0] < 2 + 2 * ON_TIME, spread

    # Each tick of the schedule fired once, on time, whichever worker fired it.
    ticks = list(ScheduleTick.objects.filter(schedule=schedule, tick_at__gte=ready).order_by("tick_at"))
    assert len(ticks) >= 3
    assert len({t.tick_at for t in ticks}) == len(ticks)
    assert all(b.tick_at - a.tick_at == timedelta(seconds=2) for a, b in zip(ticks, ticks[1:], strict=False))
    assert all(timedelta(0) <= t.fired_at - t.tick_at < timedelta(seconds=ON_TIME) for t in ticks)


PRODUCER = textwrap.dedent(
    """
    import json, time
    from datetime import timedelta

    import django

    django.setup()
    from django.db import connection

    from django_supaqueue import queue as q, reschedule
    from django_supaqueue.models import Schedule
    from tests.testapp import tasks

    def db_now():
        with connection.cursor() as cur:
            cur.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
            return cur.fetchone()[0]

    d = timedelta(seconds=5)
    record = tasks.record
    first = record.using(queue="skewed", run_at=d).enqueue(n=1)  # insert_one
    jobs = [first]
    jobs += record.enqueue_many([{"n": 2}, {"n": 3}], queue="skewed", run_at=d)  # insert_batch
    jobs += record.enqueue_many(  # insert_many
        [{"n": 4, "tenant_id": "a"}, {"n": 5, "tenant_id": "b"}], queue="skewed", run_at=d
    )
    jobs.append(record.using(queue="skewed", run_at=d, key="k", key_mode="replace").enqueue(n=6))  # upsert
    jobs.append(record.using(queue="skewed", run_at=d, depends_on=[first]).enqueue(n=7))  # a graph
    later = record.using(queue="skewed").enqueue(n=8)
    reschedule([later], run_at=timedelta(seconds=7))
    rescheduled_at = db_now()
    Schedule.objects.create(name="made-here", task_name="tests.testapp.tasks.noop", cron="*/2 * * * * *")
    made_at = db_now()
    pruned = q.prune(connection, successful_hours=1, failed_hours=None, cancelled_hours=None)
    print(json.dumps({
        "skew": time.time() - db_now(),
        "jobs": [j.pk for j in jobs],
        "later": later.pk,
        "rescheduled_at": rescheduled_at,
        "made_at": made_at,
        "pruned": pruned,
    }))
    """
)


@pytest.mark.parametrize("offset, skew", [("+10m", SKEW), ("-10m", -SKEW)])
def test_a_host_with_a_skewed_clock_writes_times_by_the_databases_clock(offset, skew, shim):
    Queue.objects.create(name="skewed")
    old = [tasks.noop.enqueue(i=i) for i in range(2)]
    with connection.cursor() as cur:  # finished 50 and 70 minutes ago by the database's clock
        cur.execute(
            "UPDATE supaqueue_job SET status = 'successful', finished_at = now() - %s * interval '1 minute' "
            "WHERE id = %s",
            [50, old[0].pk],
        )
        cur.execute(
            "UPDATE supaqueue_job SET status = 'successful', finished_at = now() - %s * interval '1 minute' "
            "WHERE id = %s",
            [70, old[1].pk],
        )
    done = subprocess.run(
        [sys.executable, "-c", PRODUCER],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": database_url(),
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            **skewed(offset, shim),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["skew"] == pytest.approx(skew, abs=5)

    # run_at=timedelta(seconds=5) is 5 s after the database's now(), through every enqueue path.
    for job in Job.objects.filter(pk__in=out["jobs"]):
        assert job.run_at - job.created_at == timedelta(seconds=5), job.payload
    later = Job.objects.get(pk=out["later"])
    assert later.run_at.timestamp() - out["rescheduled_at"] == pytest.approx(7, abs=1)
    # A schedule saved there owes its next tick by the database's clock.
    made = Schedule.objects.get(name="made-here")
    assert 0 < made.next_run_at.timestamp() - out["made_at"] <= 2
    # Pruning went by the database's clock: the job 70 minutes old went, the one 50 minutes old stayed.
    assert out["pruned"] == 1
    assert list(Job.objects.filter(pk__in=[j.pk for j in old]).values_list("pk", flat=True)) == [old[0].pk]

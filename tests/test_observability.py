"""Operators' view: life-cycle signals, supaqueue_status and supaqueue_health."""

import json
import socket
import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from django_supaqueue import cancel, signals
from django_supaqueue.models import Job
from django_supaqueue.worker.process import WorkerProcess
from tests.factories import CurrentJobFactory, JobFactory, QueueFactory, WorkerFactory
from tests.helpers import wait_for
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)

SIGNALS = [
    "job_enqueued",
    "job_started",
    "job_succeeded",
    "job_retried",
    "job_failed",
    "job_cancelled",
    "job_lost",
]


@pytest.fixture
def fired():
    seen: Counter = Counter()
    details: list = []
    receivers = []
    for name in SIGNALS:

        def receiver(sender, name=name, **kwargs):
            seen[name] += 1
            details.append((name, kwargs))

        getattr(signals, name).connect(receiver, weak=False)
        receivers.append((name, receiver))
    yield seen, details
    for name, receiver in receivers:
        getattr(signals, name).disconnect(receiver)


def test_every_life_cycle_signal_fires_once_per_event(drain, fired):
    seen, details = fired
    tasks.add.enqueue(1, 2)  # enqueued, started, succeeded
    tasks.flaky.enqueue(n=1, failures=1)  # enqueued, started, retried, started, succeeded
    tasks.always_fails.enqueue()  # enqueued, started, retried, started, failed
    doomed = tasks.noop.enqueue()
    cancel([doomed])  # enqueued, cancelled
    drain()
    assert seen == Counter(
        job_enqueued=4, job_started=5, job_succeeded=2, job_retried=2, job_failed=1, job_cancelled=1
    )
    failed = next(kw for name, kw in details if name == "job_failed")
    assert failed["task_name"] == "tests.testapp.tasks.always_fails" and failed["error_class"] == "ValueError"
    retried = next(kw for name, kw in details if name == "job_retried")
    assert retried["retry_at"] is not None and retried["attempt"] == 1


def test_job_lost_fires_when_a_dead_workers_lease_is_recovered(fired, settings):
    seen, details = fired
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "HEARTBEAT_INTERVAL": 0.1}
    dead = WorkerFactory(last_heartbeat_at=timezone.now() - timedelta(minutes=5))
    lease = CurrentJobFactory(
        worker=dead,
        lease_expires_at=timezone.now() - timedelta(seconds=1),
        job__task_name="tests.testapp.tasks.noop",
    )
    worker = WorkerProcess(concurrency=1, poll_interval=0.1)
    thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False})
    thread.start()
    try:
        wait_for(lambda: Job.objects.filter(pk=lease.job_id, status=Job.Status.SUCCESSFUL).exists(), 10)
    finally:
        worker.stop()
        thread.join(10)
    assert seen["job_lost"] == 1
    assert next(kw for name, kw in details if name == "job_lost")["job_id"] == lease.job_id


def test_a_failing_receiver_never_breaks_the_queue(drain):
    def broken(sender, **kwargs):
        raise RuntimeError("receiver bug")

    signals.job_succeeded.connect(broken, weak=False)
    try:
        job = tasks.add.enqueue(2, 2)
        drain()
    finally:
        signals.job_succeeded.disconnect(broken)
    assert Job.objects.get(pk=job.pk).status == Job.Status.SUCCESSFUL


def test_status_json_reports_queues_throughput_and_workers(drain, capsys):
    QueueFactory(name="emails", concurrency_limit=3)
    tasks.add.enqueue_many([{"a": 1, "b": 1}] * 3)
    tasks.send_email.enqueue(to="x")
    JobFactory(run_at=timezone.now() - timedelta(seconds=90))
    drain(queues=["emails"])
    WorkerFactory(name="w-status")
    call_command("supaqueue_status", "--json")
    snap = json.loads(capsys.readouterr().out)
    assert snap["queues"]["default"]["counts"]["pending"] == 4
    assert snap["queues"]["default"]["oldest_runnable_seconds"] >= 89
    assert snap["queues"]["emails"]["counts"]["successful"] == 1
    assert snap["queues"]["emails"]["concurrency_limit"] == 3
    assert snap["finished_last_minute"]["successful"] == 1
    assert [w["name"] for w in snap["workers"]] == ["w-status"]


def test_status_once_renders_a_table(capsys):
    tasks.noop.enqueue()
    call_command("supaqueue_status", "--once")
    out = capsys.readouterr().out
    assert "Queues at" in out and "default" in out and "Workers" in out


def health(*args):
    try:
        call_command("supaqueue_health", *args)
    except SystemExit as exit:
        return exit.code
    return 0


def test_health_passes_with_a_beating_worker_on_this_host(capsys):
    WorkerFactory(host=socket.gethostname())
    assert health() == 0
    assert "ok database" in capsys.readouterr().out


def test_health_fails_without_a_live_worker_unless_told_not_to_look(capsys):
    WorkerFactory(host=socket.gethostname(), last_heartbeat_at=timezone.now() - timedelta(minutes=10))
    assert health() == 1
    assert "FAIL workers" in capsys.readouterr().out
    assert health("--no-workers") == 0


def test_health_fails_when_a_queue_waits_too_long(capsys):
    JobFactory(run_at=timezone.now() - timedelta(minutes=5))
    assert health("--no-workers", "--max-pending-age", "60") == 1
    assert "default waits" in capsys.readouterr().out
    assert health("--no-workers", "--max-pending-age", "3600") == 0


def test_http_jobs_send_job_enqueued_too(fired):
    from django_supaqueue import enqueue_http
    from django_supaqueue.models import Queue

    seen, details = fired
    Queue.objects.create(name="hooks", http_url="http://127.0.0.1:9/fn")
    job = enqueue_http("hooks", {"order": 1})
    assert seen["job_enqueued"] == 1
    assert details[0][1]["job_id"] == job.pk

"""Every runner of jobs goes through one attempt cycle, and so sends the same life-cycle signals.

The runtime ``runworkers`` runs (here in this process, through
``testing.run_worker``), the run endpoint and ``testing.run_pending`` run the
same three jobs: one that succeeds, one that fails once and then succeeds, one
that fails for good. Each must announce exactly the same starts and outcomes.
"""

import pytest
from django.test import Client

from django_supaqueue import signals, testing
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "attempt-cycle-token"
SIGNALS = {
    "started": signals.job_started,
    "succeeded": signals.job_succeeded,
    "retried": signals.job_retried,
    "failed": signals.job_failed,
}
EXPECTED = sorted(
    [
        ("started", "add", 1),
        ("succeeded", "add", 1),
        ("started", "flaky", 1),
        ("retried", "flaky", 1),
        ("started", "flaky", 2),
        ("succeeded", "flaky", 2),
        ("started", "always_fails", 1),
        ("retried", "always_fails", 1),
        ("started", "always_fails", 2),
        ("failed", "always_fails", 2),
    ]
)


@pytest.fixture
def announced():
    """(signal, task, attempt) of every life-cycle signal sent while the test runs."""
    seen = []
    receivers = []
    for name, signal in SIGNALS.items():

        def receiver(sender, name=name, **kwargs):
            seen.append((name, kwargs["task_name"].rpartition(".")[2], kwargs["attempt"]))

        signal.connect(receiver, weak=False)
        receivers.append((signal, receiver))
    yield seen
    for signal, receiver in receivers:
        signal.disconnect(receiver)


def run_with_run_worker() -> None:
    testing.run_worker(concurrency=1)


def run_with_the_run_endpoint() -> None:
    client = Client()
    for _ in range(3):  # the retries are pending again at once (RETRY_BACKOFF 0)
        response = client.post("/queue/run?queue=default&limit=10", HTTP_X_SUPAQUEUE_TOKEN=TOKEN)
        assert response.status_code == 200, response.content


def run_with_run_pending() -> None:
    testing.run_pending()


@pytest.mark.parametrize("run", [run_with_run_worker, run_with_the_run_endpoint, run_with_run_pending])
def test_every_runner_announces_the_same_starts_and_outcomes(run, announced, settings):
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "API_TOKEN": TOKEN, "RETRY_BACKOFF": 0.0}
    tasks.add.enqueue(1, 2)
    tasks.flaky.enqueue(n=1, failures=1)
    tasks.always_fails.enqueue()
    run()
    assert sorted(announced) == EXPECTED


def test_the_run_endpoint_enforces_task_timeouts(settings):
    """It runs a worker process for the request: a task's timeout interrupts it, as in runworkers."""
    from django_supaqueue.models import CurrentJob, Job

    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "API_TOKEN": TOKEN}
    job = tasks.busy_loop.enqueue(n=1, seconds=3)  # timeout=0.5, max_attempts=1
    response = Client().post("/queue/run?queue=default&limit=1", HTTP_X_SUPAQUEUE_TOKEN=TOKEN)
    (entry,) = response.json()["jobs"]
    assert entry["status"] == Job.Status.FAILED and "JobTimeout" in entry["error"]
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and not CurrentJob.objects.exists()


def test_the_run_endpoint_recovers_an_expired_lease_and_runs_the_job(settings):
    from datetime import timedelta

    from django.utils import timezone

    from django_supaqueue.models import CurrentJob, Job, JobEvent
    from tests.factories import CurrentJobFactory

    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "API_TOKEN": TOKEN, "RETRY_BACKOFF": 0.0}
    lost = tasks.add.enqueue(2, 3)
    Job.objects.filter(pk=lost.pk).update(status=Job.Status.IN_PROGRESS, attempts=1)
    CurrentJobFactory(job=lost, lease_expires_at=timezone.now() - timedelta(seconds=1))
    response = Client().post("/queue/run?queue=default&limit=1", HTTP_X_SUPAQUEUE_TOKEN=TOKEN)
    assert [(e["id"], e["status"]) for e in response.json()["jobs"]] == [(lost.pk, Job.Status.SUCCESSFUL)]
    assert JobEvent.objects.filter(job=lost, kind=JobEvent.Kind.RETRIED, attempt=1).exists()
    assert not CurrentJob.objects.exists()

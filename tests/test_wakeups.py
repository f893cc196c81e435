"""A worker wakes for every job it knows is coming, not only the next one, and without waiting for its poll.

Real ``runworkers`` processes with a 30 s poll: a job that starts within a second or two
of when it could was woken for, not found by the poll.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from django_supaqueue.models import Job
from tests.factories import QueueFactory
from tests.helpers import wait_for
from tests.testapp import tasks
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)

SLOW_POLL = {"SUPAQUEUE_POLL_INTERVAL": "30"}


def done(label: str, count: int) -> bool:
    return Execution.objects.filter(label=label).count() >= count


def test_every_delayed_job_wakes_the_worker_not_only_the_first(worker_processes):
    worker_processes.start("-c", "2", env=SLOW_POLL)
    worker_processes.wait_ready(1)
    jobs = [tasks.record.using(run_at=timedelta(seconds=s)).enqueue(n=s, label="later") for s in (1, 3, 5)]
    wait_for(lambda: done("later", 3), 15)  # the poll would come at 30 s
    for job in jobs:
        job.refresh_from_db()
        ran = Execution.objects.get(label="later", n=job.payload["n"]).started
        assert job.run_at.timestamp() - 0.5 <= ran < job.run_at.timestamp() + 3


def test_a_rate_limited_queue_is_claimed_again_as_its_slots_free(worker_processes):
    """Its claims take only idle slots, so the end of an attempt must wake the loop."""
    QueueFactory(name="paced", rate_limit=100, rate_period=1.0)
    worker_processes.start("-c", "1", env=SLOW_POLL)
    worker_processes.wait_ready(1)
    tasks.record.enqueue_many([{"n": n, "label": "warm"} for n in range(20)])  # short jobs: it claims ahead
    wait_for(lambda: done("warm", 20), 15)
    tasks.record.using(queue="paced").enqueue_many([{"n": n, "label": "paced"} for n in range(6)])
    wait_for(lambda: done("paced", 6), 10)
    assert Job.objects.filter(queue__name="paced", status=Job.Status.SUCCESSFUL).count() == 6

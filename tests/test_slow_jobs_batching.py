"""Slow attempts share round trips, as short ones do.

A slow job's slot refilled by a round trip of its own would cost a transaction per
HTTP call. The async lane holds its slots' worth of jobs claimed ahead, so while one
round trip is under way others end, and the next one writes them all and claims
their replacements together. On threads, jobs of a few milliseconds end one at a
time: a loop whose slots all have work holds their outcomes back (OUTCOME_WAIT)
and writes them together.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from django_supaqueue import queue as q
from django_supaqueue.models import Job
from django_supaqueue.worker.process import WorkerProcess
from django_supaqueue.worker.unwritten import Unwritten
from tests.factories import QueueFactory
from tests.helpers import wait_for
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def written(monkeypatch):
    """The number of outcomes each of the worker's round trips wrote, in order."""
    counts = []
    original = q.finish_and_claim

    def counting(conn, **kwargs):
        counts.append(len(kwargs["successes"]) + len(kwargs["failures"]))
        return original(conn, **kwargs)

    monkeypatch.setattr(q, "finish_and_claim", counting)
    return counts


def test_the_outcomes_of_slow_attempts_are_written_several_per_round_trip(written):
    QueueFactory(name="slow", execution_mode="async")
    n = 600
    tasks.async_wait.enqueue_many([{"i": i, "seconds": 0.05} for i in range(n)], queue="slow")
    worker = WorkerProcess(queues=["slow"], concurrency=1, async_concurrency=100, poll_interval=30)
    thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False})
    thread.start()
    try:
        wait_for(lambda: not Job.objects.exclude(status=Job.Status.SUCCESSFUL).exists(), 60)
    finally:
        worker.stop()
        thread.join(10)
    assert sum(written) == n  # every outcome written once
    with_outcomes = [k for k in written if k]
    assert len(with_outcomes) < n / 4, (len(with_outcomes), n)  # about 30 per round trip here


def test_jobs_of_a_few_milliseconds_on_threads_share_round_trips(written):
    """Busy slots let a loop hold outcomes back (OUTCOME_WAIT): not one round trip per job."""
    n = 400
    tasks.where.enqueue_many([{"seconds": 0.003, "n": i} for i in range(n)])
    worker = WorkerProcess(concurrency=4, claim_connections=1, burst=True, poll_interval=30)
    worker.run(handle_signals=False)
    assert Job.objects.filter(status=Job.Status.SUCCESSFUL).count() == n
    assert sum(written) == n  # every outcome written once
    with_outcomes = [k for k in written if k]
    assert len(with_outcomes) < n / 12, (len(with_outcomes), n)  # about 30 per round trip here


@pytest.mark.parametrize("freed", [None, "capped", "group"])
def test_an_outcome_that_freed_a_cap_or_a_group_is_not_held_back(freed):
    """The next job of a capped or serial queue, or of a group, waits for that write: it goes at once."""
    unwritten = Unwritten()
    unwritten.record(SimpleNamespace(id=1, attempt=1), SimpleNamespace(job_id=1, attempt=1))
    if freed == "capped":
        unwritten.freed_capped.add("reports")
    elif freed == "group":
        unwritten.freed_groups.add("customer-7")
    assert unwritten.holding(busy=True, batch=100) is (freed is None)
    assert not unwritten.holding(busy=False, batch=100)
    assert not unwritten.holding(busy=True, batch=1)

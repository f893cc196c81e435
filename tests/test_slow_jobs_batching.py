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

import pytest

from django_supaqueue import queue as q
from django_supaqueue.models import Job
from django_supaqueue.worker.process import WorkerProcess
from tests.factories import QueueFactory
from tests.helpers import wait_for
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_outcomes_of_slow_attempts_are_written_several_per_round_trip(monkeypatch):
    QueueFactory(name="slow", execution_mode="async")
    n = 600
    tasks.async_wait.enqueue_many([{"i": i, "seconds": 0.05} for i in range(n)], queue="slow")
    written = []
    original = q.finish_and_claim

    def counting(conn, **kwargs):
        written.append(len(kwargs["successes"]) + len(kwargs["failures"]))
        return original(conn, **kwargs)

    monkeypatch.setattr(q, "finish_and_claim", counting)
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


def test_jobs_of_a_few_milliseconds_on_threads_share_round_trips(monkeypatch):
    """Busy slots let a loop hold outcomes back (OUTCOME_WAIT): not one round trip per job."""
    n = 400
    tasks.where.enqueue_many([{"seconds": 0.003, "n": i} for i in range(n)])
    written = []
    original = q.finish_and_claim

    def counting(conn, **kwargs):
        written.append(len(kwargs["successes"]) + len(kwargs["failures"]))
        return original(conn, **kwargs)

    monkeypatch.setattr(q, "finish_and_claim", counting)
    worker = WorkerProcess(concurrency=4, claim_connections=1, burst=True, poll_interval=30)
    worker.run(handle_signals=False)
    assert Job.objects.filter(status=Job.Status.SUCCESSFUL).count() == n
    assert sum(written) == n  # every outcome written once
    with_outcomes = [k for k in written if k]
    assert len(with_outcomes) < n / 12, (len(with_outcomes), n)  # about 30 per round trip here

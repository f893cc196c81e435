"""Claiming ahead: a worker with short jobs leases more jobs than it has slots, runs no more at once."""

import pytest
from django.test.utils import override_settings

from django_supaqueue.models import Job, Queue
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_census():
    tasks._census.update(running=0, most_running=0, most_leased=0)


def test_short_jobs_are_claimed_ahead_but_never_run_beyond_concurrency(drain):
    tasks.census.enqueue_many([{"n": n, "seconds": 0.002} for n in range(300)])
    drain(concurrency=2)
    assert Job.objects.filter(status="successful").count() == 300
    assert tasks._census["most_running"] <= 2
    assert tasks._census["most_leased"] > 2  # jobs waited, leased, for a slot


@override_settings(SUPAQUEUE={"PREFETCH_WAIT": 0})
def test_prefetch_wait_zero_turns_it_off(drain):
    tasks.census.enqueue_many([{"n": n} for n in range(100)])
    drain(concurrency=2)
    assert tasks._census["most_leased"] <= 2


def test_capped_queues_are_never_claimed_ahead(drain):
    Queue.objects.create(name="capped", concurrency_limit=50)
    tasks.census.using(queue="capped").enqueue_many([{"n": n} for n in range(200)])
    drain(concurrency=2)
    assert Job.objects.filter(status="successful").count() == 200
    assert tasks._census["most_leased"] <= 2


@override_settings(SUPAQUEUE={"PREFETCH_WAIT": 30})
def test_a_timeout_counts_from_the_start_not_from_the_claim(drain):
    """The first 0.2 s job runs alone (the worker does not know yet that jobs are short); the
    other three are then claimed together behind one slot, so the last starts 0.4 s and ends
    0.6 s after its claim, past its 0.5 s timeout: it must still succeed."""
    jobs = tasks.busy_loop.enqueue_many([{"n": n, "seconds": 0.2} for n in range(4)])
    drain(concurrency=1)
    stored = Job.objects.filter(pk__in=[j.pk for j in jobs])
    assert {j.status for j in stored} == {"successful"}, [j.last_error for j in stored]

"""A notification of new jobs wakes the lanes of its queue's kind only, once a claim has shown that kind.

Waking the async lane for every plain job cost each notification a second claim
round trip that could find nothing (and the other way round for HTTP calls).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pytest

from django_supaqueue.queue import ClaimedJob
from django_supaqueue.worker import lanes as lanes_module
from django_supaqueue.worker.lanes import Lanes
from django_supaqueue.worker.process import WorkerProcess
from tests.factories import QueueFactory
from tests.helpers import finished, wait_for
from tests.testapp import tasks


@dataclass
class StubLoop:
    on_loop: bool | None
    free_slots: int = 1
    woken: list[float] = field(default_factory=list)

    def notify(self, due_epoch: float = 0.0) -> None:
        self.woken.append(due_epoch)


def claimed(queue: str, *, http: bool = False, mode: str = "threads") -> ClaimedJob:
    return ClaimedJob(
        id=1,
        queue=queue,
        task_name="t",
        payload={},
        args=[],
        attempt=1,
        max_attempts=1,
        timeout=None,
        capped=False,
        execution_mode=mode,
        http={"url": "http://x"} if http else None,
    )


@pytest.fixture
def lanes():
    threads, busy, loop = StubLoop(False, free_slots=1), StubLoop(False, free_slots=5), StubLoop(True)
    routes = Lanes([threads, busy, loop])
    routes.started()
    return routes, threads, busy, loop


def test_a_queue_not_seen_yet_wakes_the_freest_thread_lane_and_the_async_lane(lanes):
    routes, threads, busy, loop = lanes
    routes.route_jobs(0.0, "new")
    assert (len(threads.woken), len(busy.woken), len(loop.woken)) == (0, 1, 1)


def test_a_queue_learnt_from_a_claim_wakes_only_its_kind(lanes):
    routes, threads, busy, loop = lanes
    routes.learn([claimed("plain"), claimed("hooks", http=True), claimed("feeds", mode="async")])
    routes.route_jobs(0.0, "plain")
    assert (len(busy.woken), len(loop.woken)) == (1, 0)
    routes.route_jobs(0.0, "hooks")
    routes.route_jobs(0.0, "feeds")
    assert (len(threads.woken), len(busy.woken), len(loop.woken)) == (0, 1, 2)


def test_what_a_claim_taught_expires_so_a_queue_that_changed_kind_is_routed_anew(lanes, monkeypatch):
    routes, _, busy, loop = lanes
    routes.learn([claimed("plain")])
    monkeypatch.setattr(lanes_module, "KIND_TTL", 0.0)
    routes.route_jobs(0.0, "plain")
    assert (len(busy.woken), len(loop.woken)) == (1, 1)


def test_a_delayed_job_sets_a_timer_on_every_lane_whatever_its_kind(lanes):
    routes, threads, busy, loop = lanes
    routes.learn([claimed("plain")])
    routes.route_jobs(time.time() + 60, "plain")
    assert all(len(lane.woken) == 1 for lane in (threads, busy, loop))


def test_timers_heard_before_the_lanes_exist_are_handed_to_them():
    loops: list[StubLoop] = []
    routes = Lanes(loops)
    due = time.time() + 60
    routes.route_jobs(due, "plain")  # LISTEN starts before the worker registers and makes its lanes
    loops += [StubLoop(False), StubLoop(True)]
    assert all(not lane.woken for lane in loops)
    routes.started()
    assert [lane.woken for lane in loops] == [[due], [due]]
    routes.route_jobs(due + 1, "plain")  # from then on, straight to them
    assert [lane.woken for lane in loops] == [[due, due + 1], [due, due + 1]]


@pytest.mark.django_db(transaction=True)
def test_a_worker_stops_waking_its_async_lane_for_plain_jobs_and_still_runs_every_kind(monkeypatch):
    QueueFactory(name="feeds", execution_mode="async")
    worker = WorkerProcess(concurrency=2, async_concurrency=10, poll_interval=30)
    thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False})
    thread.start()
    try:
        wait_for(lambda: worker.worker_id is not None and any(lane.on_loop for lane in worker.loops), 10)
        async_lane = worker.loops[-1]
        assert async_lane.on_loop is True
        first = tasks.add.enqueue(1, 2)  # not seen yet: both kinds of lane claim
        wait_for(lambda: finished(first), 10)
        woken = []
        original = async_lane.notify
        monkeypatch.setattr(async_lane, "notify", lambda due=0.0: (woken.append(due), original(due)))
        plain = [tasks.add.enqueue(i, 1) for i in range(5)]
        for job in plain:
            wait_for(lambda job=job: finished(job), 10)
        assert [d for d in woken if d == 0.0] == []  # the default queue is known: plain jobs only
        feed = tasks.async_double.using(queue="feeds").enqueue(3)
        wait_for(lambda: finished(feed), 10)  # within the 30 s poll: its notification woke the lane
        assert feed.result == 6 and woken
    finally:
        worker.stop()
        thread.join(10)


@pytest.mark.django_db(transaction=True)
def test_the_async_lane_starts_only_once_a_served_queue_needs_it():
    """Without an HTTP or an async queue a worker has no event loop; the claim after one appears starts it."""
    worker = WorkerProcess(concurrency=2, async_concurrency=10, poll_interval=30)
    thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False})
    thread.start()
    try:
        wait_for(lambda: worker.loops and all(loop._running is not None for loop in worker.loops), 10)
        plain = tasks.add.enqueue(1, 2)
        wait_for(lambda: finished(plain), 10)
        assert worker.loops and not any(loop.on_loop for loop in worker.loops)
        assert all(loop.on_loop is False for loop in worker.loops)  # HTTP and async jobs wait for the lane
        QueueFactory(name="feeds", execution_mode="async")
        feed = tasks.async_double.using(queue="feeds").enqueue(3)  # its notification: a claim, then the lane
        wait_for(lambda: finished(feed), 10)  # well within the 30 s poll
        feed.refresh_from_db()
        assert feed.result == 6
        lane = worker.loops[-1]
        assert lane.on_loop is True and lane.processed == 1
        assert sum(loop.on_loop is True for loop in worker.loops) == 1
    finally:
        worker.stop()
        thread.join(10)
    assert not thread.is_alive()

"""The async lane: calls to HTTP queues as coroutines, against real local servers and a real database.

Each test drives a real worker (``runworkers -a`` or a WorkerProcess in this
process) and checks at the endpoint what it received: how many calls at once,
each exactly once, with the job's method, headers, identity and secret.
"""

import asyncio
import json
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from django_supaqueue import cancel, enqueue_http
from django_supaqueue.handlers.http_async import new_session, perform_http_async
from django_supaqueue.models import Job, JobEvent, Queue
from django_supaqueue.queue import ClaimedJob
from django_supaqueue.worker.process import WorkerProcess
from tests.helpers import LocalServer, QuietHandler, RecordingServer, wait_for
from tests.test_http_rate_limit import TOLERANCE, ArrivalServer, most_in_one_window
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "an-async-secret-that-must-never-be-stored"


@pytest.fixture
def secret(settings):
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "HTTP_SECRETS": {"edge": SECRET}}


@pytest.fixture
def running_worker():
    """``start(**options)``: a WorkerProcess on a thread (not burst), stopped at teardown."""
    started = []

    def start(**options):
        options.setdefault("poll_interval", 1)
        worker = WorkerProcess(**options)
        thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False})
        thread.start()
        started.append((worker, thread))
        wait_for(lambda: len(worker.loops) > 0 and all(loop._running is not None for loop in worker.loops))
        return worker

    yield start
    for worker, thread in started:
        worker.stop()
        worker.stop()
        thread.join(20)


def test_many_calls_are_in_flight_at_once_each_made_once_as_the_job_says(worker_processes, http_server):
    n = 60
    Queue.objects.create(name="hooks", http_url=http_server.url + "/fn", http_headers={"X-Team": "blue"})
    Queue.objects.create(name="reads", http_url=http_server.url + "/read", http_method="GET")
    for i in range(3):
        http_server.script(f"/fn/p{i}", (200, {}, b"{}", 0.5))
    jobs = [enqueue_http("hooks", {"n": i}, path=f"p{i % 3}") for i in range(n)]
    get = enqueue_http("reads", {"q": "x", "ids": [1, 2]})
    worker_processes.start("-c", "2", "-a", "50")
    wait_for(lambda: Job.objects.filter(status=Job.Status.SUCCESSFUL).count() == n + 1, 60)
    assert http_server.peak > 2 * 2  # more than the thread slots could hold
    posts = [r for r in http_server.requests if r["method"] == "POST"]
    assert sorted(json.loads(r["body"])["n"] for r in posts) == list(range(n))  # each exactly once
    by_id = {int(r["headers"]["X-Supaqueue-Job-Id"]): r for r in posts}
    for job in jobs:
        req = by_id[job.id]
        n_ = json.loads(req["body"])["n"]
        assert req["path"] == f"/fn/p{n_ % 3}"
        assert req["headers"]["Idempotency-Key"] == f"supaqueue-{job.id}"
        assert req["headers"]["X-Supaqueue-Attempt"] == "1"
        assert req["headers"]["X-Team"] == "blue"
        assert req["headers"]["Content-Type"] == "application/json"
    (read,) = [r for r in http_server.requests if r["method"] == "GET"]
    assert read["query"] == [("q", "x"), ("ids", "1"), ("ids", "2")] and read["body"] == b""
    assert read["headers"]["X-Supaqueue-Job-Id"] == str(get.id)


def test_the_secret_is_sent_and_never_stored(drain, http_server, secret):
    Queue.objects.create(name="hooks", http_url=http_server.url + "/fn", http_secret="edge")
    http_server.script("/fn", (200, {}, json.dumps({"echo": f"Bearer {SECRET}"}).encode()))
    job = enqueue_http("hooks", {})
    worker = drain(["hooks"], async_concurrency=5)
    assert worker.loops[-1].processed == 1
    (req,) = http_server.requests
    assert req["headers"]["Authorization"] == f"Bearer {SECRET}"
    job.refresh_from_db()
    assert job.result == {"status": 200, "body": {"echo": "Bearer [secret]"}}


def test_the_response_rules_hold_on_the_async_lane(drain, http_server, settings):
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "HTTP_MAX_RESPONSE_BYTES": 10}
    for name in ("moved", "flaky", "busy", "big"):
        Queue.objects.create(name=name, http_url=f"{http_server.url}/{name}", max_attempts=3)
    http_server.script("/moved", (302, {"Location": http_server.url + "/elsewhere"}, b""))
    http_server.script("/flaky", (503, {}, b"down"), (200, {}, b'{"ok": 1}'))
    http_server.script("/busy", (429, {"Retry-After": "30"}, b""))
    http_server.script("/big", (200, {"Content-Type": "text/plain"}, b"y" * 1000))
    moved, flaky, busy, big = (enqueue_http(name, {}) for name in ("moved", "flaky", "busy", "big"))
    before = timezone.now()
    worker = drain(["moved", "flaky", "busy", "big"], async_concurrency=20)
    assert worker.loops[-1].on_loop is True and worker.loops[-1].processed == 5
    for job in (moved, flaky, busy, big):
        job.refresh_from_db()
    assert moved.status == Job.Status.FAILED and moved.attempts == 1  # a redirect is not followed
    assert "HTTP 302" in moved.last_error
    assert not [r for r in http_server.requests if r["path"] == "/elsewhere"]
    assert flaky.status == Job.Status.SUCCESSFUL and flaky.attempts == 2
    assert flaky.result == {"status": 200, "body": {"ok": 1}}
    assert busy.status == Job.Status.PENDING and busy.attempts == 1
    assert before + timedelta(seconds=29) <= busy.run_at <= timezone.now() + timedelta(seconds=31)
    assert big.result == {"status": 200, "body": "y" * 10, "truncated": True}


class DribbleServer(LocalServer):
    """Answers with headers at once, then one byte every 0.1 s for a minute: no read ever times out."""

    def __init__(self) -> None:
        self.calls = 0
        self.open = 0
        outer = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                self.read_body()
                outer.calls += 1
                outer.open += 1
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "600")
                    self.end_headers()
                    for _ in range(600):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.1)
                except OSError:
                    pass  # the worker hung up: the call was cancelled
                finally:
                    outer.open -= 1

        self.serve(Handler)


@pytest.fixture
def dribble_server():
    server = DribbleServer()
    yield server
    server.close()


def test_a_call_past_its_timeout_is_cancelled_and_retried(drain, dribble_server):
    # The client's read timeout (0.3 s) never fires: bytes keep coming. The attempt's own timeout
    # (twice the queue's, plus 5 s) cancels the call's task.
    Queue.objects.create(name="slow", http_url=dribble_server.url + "/fn", timeout=0.3, max_attempts=2)
    job = enqueue_http("slow", {})
    started = time.monotonic()
    drain(["slow"], async_concurrency=5)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and job.attempts == 2 and dribble_server.calls == 2
    assert time.monotonic() - started < 30
    events = JobEvent.objects.filter(job=job, kind__in=["retried", "failed"])
    assert {e.error_class for e in events} == {"django_supaqueue.exceptions.JobTimeout"}
    wait_for(lambda: dribble_server.open == 0, 5)  # the cancelled calls hung up


def test_cancelling_a_running_call_stops_it(running_worker, dribble_server):
    Queue.objects.create(name="slow", http_url=dribble_server.url + "/fn", timeout=60)
    job = enqueue_http("slow", {})
    worker = running_worker(queues=["slow"], async_concurrency=5)
    lane = worker.loops[-1]
    wait_for(lambda: dribble_server.calls == 1 and lane.running, 20)
    cancel([job.pk])
    wait_for(lambda: not lane.running, 10)
    wait_for(lambda: dribble_server.open == 0, 5)
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED


def test_a_rate_limited_queue_keeps_its_window(drain):
    server = ArrivalServer()
    try:
        Queue.objects.create(name="hooks", http_url=server.url + "/fn", rate_limit=2, rate_period=1.0)
        n = 8
        for i in range(n):
            enqueue_http("hooks", {"n": i})
        worker = WorkerProcess(queues=["hooks"], async_concurrency=50)
        thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False})
        thread.start()
        try:
            wait_for(lambda: Job.objects.filter(status=Job.Status.SUCCESSFUL).count() == n, 30)
        finally:
            worker.stop()
            worker.stop()
            thread.join(20)
        times = sorted(t for t, _ in server.arrivals)
        assert most_in_one_window(times, 1.0 - TOLERANCE) <= 2, [round(t - times[0], 3) for t in times]
        assert sorted(job for _, job in server.arrivals) == list(range(n))
    finally:
        server.close()


def test_a_capped_http_queue_never_exceeds_its_cap(drain, http_server):
    Queue.objects.create(name="capped", http_url=http_server.url + "/fn", concurrency_limit=3)
    http_server.script("/fn", (200, {}, b"{}", 0.2))
    for i in range(15):
        enqueue_http("capped", {"n": i})
    drain(["capped"], async_concurrency=50)
    assert Job.objects.filter(status=Job.Status.SUCCESSFUL).count() == 15
    assert 1 < http_server.peak <= 3


def test_task_jobs_run_on_thread_lanes_beside_http_calls(drain, http_server):
    Queue.objects.create(name="hooks", http_url=http_server.url + "/fn")
    http_server.script("/fn", (200, {}, b"{}", 0.2))
    for i in range(20):
        enqueue_http("hooks", {"n": i})
    for i in range(10):
        tasks.add.enqueue(i, 1)
    worker = drain(None, concurrency=2, async_concurrency=20)
    *threads, lane = worker.loops
    assert lane.on_loop is True and lane.processed == 20
    assert all(loop.on_loop is False for loop in threads) and sum(t.processed for t in threads) == 10
    assert Job.objects.filter(status=Job.Status.SUCCESSFUL).count() == 30
    assert http_server.peak > 2


def test_without_an_async_lane_http_calls_run_on_the_threads(drain, http_server):
    Queue.objects.create(name="hooks", http_url=http_server.url + "/fn", timeout=0.3, max_attempts=2)
    http_server.script("/fn", (200, {}, b"{}", 2.0), (200, {}, b"{}"))
    job = enqueue_http("hooks", {})
    worker = drain(["hooks"], async_concurrency=0)
    assert all(loop.on_loop is None for loop in worker.loops)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCESSFUL and job.attempts == 2
    assert JobEvent.objects.get(job=job, kind="retried").error_class == "httpx.ReadTimeout"


# -- the gate: what is refused once the connection is ready is never written ------


def claimed(server_url: str, *, job_id: int = 1, received: float = 0.0, rate_limited: bool = False):
    return ClaimedJob(
        id=job_id,
        queue="hooks",
        task_name="",
        payload={"n": job_id},
        args=[],
        attempt=1,
        max_attempts=3,
        timeout=None,
        capped=False,
        http={"url": server_url + "/fn", "method": "POST", "headers": {}, "rate_limited": rate_limited},
        received=received,
    )


def call(*jobs: ClaimedJob, settings_change=None) -> list:
    """Make the calls in turn on one session (the second may reuse the first's connection)."""

    async def run() -> list:
        session = new_session(10)
        try:
            outcomes = []
            for i, job in enumerate(jobs):
                if i == 1 and settings_change is not None:
                    settings_change()
                outcomes.append(await perform_http_async(job, session))
            return outcomes
        finally:
            await session.close()

    return asyncio.run(run())


def test_a_late_rate_limited_call_is_put_back_unsent():
    server = RecordingServer()
    try:
        (outcome,) = call(claimed(server.url, received=time.monotonic() - 5, rate_limited=True))
        assert outcome.error_class == "django_supaqueue.exceptions.RateSlotMissed" and outcome.uncounted
        assert server.requests == []
        (outcome,) = call(claimed(server.url, received=time.monotonic(), rate_limited=True))
        assert outcome.http_status == 200 and len(server.requests) == 1
    finally:
        server.close()


def test_a_connection_to_a_local_address_is_refused_new_or_pooled(settings):
    server = RecordingServer()
    try:
        settings.SUPAQUEUE = {**settings.SUPAQUEUE, "HTTP_REFUSE_LOCAL_HOSTS": True}
        (outcome,) = call(claimed(server.url))
        assert outcome.error_class == "django_supaqueue.exceptions.HTTPConfigError" and outcome.final
        assert "loopback" in outcome.error_message and server.requests == []
        settings.SUPAQUEUE = {**settings.SUPAQUEUE, "HTTP_REFUSE_LOCAL_HOSTS": False}

        def refuse() -> None:
            settings.SUPAQUEUE = {**settings.SUPAQUEUE, "HTTP_REFUSE_LOCAL_HOSTS": True}

        first, second = call(
            claimed(server.url, job_id=1), claimed(server.url, job_id=2), settings_change=refuse
        )
        assert (
            first.http_status == 200 and second.error_class == "django_supaqueue.exceptions.HTTPConfigError"
        )
        assert [json.loads(r["body"])["n"] for r in server.requests] == [1]  # the pooled one was not sent
    finally:
        server.close()

"""A rate limit holds at the endpoint, timed by the endpoint, while worker processes join mid-run.

The claim counts a call when it is claimed; the endpoint sees it when it arrives. Between the two
lies the worker's start-up for its first call (building the HTTP client, opening the connection),
which a loaded machine makes long. These tests slow exactly that step in real ``runworkers``
processes and time the arrivals at a real server.
"""

import json
import textwrap
import time

import pytest

from django_supaqueue import enqueue_http
from django_supaqueue.models import Job, JobEvent, Queue
from tests.helpers import ROOT, LocalServer, QuietHandler, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT, PERIOD = 2, 1.0
#: Seconds the first HTTP client of each worker process takes to build: longer than a real build
#: takes on a loaded machine, so that the late call clearly outlasts the margin below.
SLOW_START = 1.0
#: The claim window's margin in these worker processes. Half of it is what a call may take from its
#: claim to its connection being ready, the other half covers the trip to the server; a warm call
#: needs well under half of it for each, even on a small loaded machine.
MARGIN = 0.4
#: The arrival times are taken by the server's handler thread once it has read the request head, a
#: step the worker does not control and a loaded machine delays by a scheduling slice or two. The
#: windows checked are shorter by this much, so that such a delay on the first of three arrivals is
#: not taken for a fourth call's worth of rate.
TOLERANCE = 0.05


class ArrivalServer(LocalServer):
    """Records when each call arrives (time.monotonic(), in the server) and which job it is."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, int]] = []
        outer = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                arrived = time.monotonic()
                body = self.read_body()
                outer.arrivals.append((arrived, json.loads(body)["n"]))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.serve(Handler)


@pytest.fixture
def arrival_server():
    server = ArrivalServer()
    yield server
    server.close()


@pytest.fixture
def slow_client_start(tmp_path):
    """Worker-process environment in which building an httpx client takes SLOW_START seconds.

    A ``sitecustomize`` module on PYTHONPATH runs before the worker's own code, and is the standard
    way to shape a Python process from outside it; it wraps ``httpx.Client.__init__`` in a sleep,
    as the CPU starvation of a loaded machine would.
    """
    hook = tmp_path / "slow_client"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        textwrap.dedent(
            f"""
            import time

            import httpx

            _build = httpx.Client.__init__


            def _slow_build(self, *args, **kwargs):
                time.sleep({SLOW_START})
                _build(self, *args, **kwargs)


            httpx.Client.__init__ = _slow_build
            """
        )
    )
    return {
        "PYTHONPATH": f"{hook}:{ROOT}",
        "SUPAQUEUE_RATE_LIMIT_MARGIN": str(MARGIN),
        "SUPAQUEUE_ASYNC_CONCURRENCY": "0",  # the calls on job threads, whose httpx client is slowed
    }


def most_in_one_window(times: list[float], width: float) -> int:
    return max(sum(1 for t in times if start <= t < start + width) for start in times)


def test_the_endpoint_sees_the_rate_limit_while_slow_starting_processes_join(
    worker_processes, arrival_server, slow_client_start
):
    n = 16
    Queue.objects.create(
        name="hooks", http_url=arrival_server.url + "/fn", rate_limit=LIMIT, rate_period=PERIOD
    )
    for i in range(n):
        enqueue_http("hooks", {"n": i})

    def successes() -> int:
        return Job.objects.filter(status=Job.Status.SUCCESSFUL).count()

    worker_processes.start("-q", "hooks", "-c", "2", env=slow_client_start)
    wait_for(lambda: successes() >= 3, 60)
    worker_processes.start("-q", "hooks", "-c", "2", env=slow_client_start)  # joins mid-run
    wait_for(lambda: successes() >= 7, 60)
    worker_processes.start("-q", "hooks", "-c", "2", env=slow_client_start)  # and another
    wait_for(lambda: successes() == n, 90)

    times = sorted(t for t, _ in arrival_server.arrivals)
    assert most_in_one_window(times, PERIOD - TOLERANCE) <= LIMIT, [round(t - times[0], 3) for t in times]
    assert sorted(job for _, job in arrival_server.arrivals) == list(range(n))  # each call made once
    assert set(Job.objects.values_list("attempts", flat=True)) == {1}  # put-backs spent none
    assert JobEvent.objects.filter(kind="succeeded").count() == n
    put_back = JobEvent.objects.filter(
        kind="retried", error_class="django_supaqueue.exceptions.RateSlotMissed"
    )
    assert put_back.exists()  # the slow starts were late, and given back rather than sent
    assert len({e.worker_name for e in JobEvent.objects.filter(kind="succeeded")}) >= 2

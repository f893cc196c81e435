"""The HTTP workload of the benchmark (benchmark.py runs it with ``--only http``).

A local endpoint answers every POST after 50 ms: an aiohttp server in a
process of its own, so that it neither shares the worker's interpreter nor
competes with it for the GIL. The baseline is a bare aiohttp ClientSession
posting the same number of calls with as many in flight as the worker's async
lane has slots; then one ``runworkers -a`` process makes the calls of an HTTP
queue. Also: the worker's peak memory with 1,000 calls in flight (a slower
endpoint, so that that many are open at once).

Run on its own: ``python benchmarks/http_bench.py serve PORT`` is the endpoint.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

DELAY = 0.05  # the endpoint's answer time, seconds
SLOW = 1.0  # the answer time of /slow: long enough for 1,000 calls to be open at once


def serve(port: int) -> None:
    """The endpoint: POST /fast after DELAY, POST /slow after SLOW; GET /peak: most open at once."""
    from aiohttp import web

    state = {"open": 0, "peak": 0}

    async def answer(request: web.Request, delay: float) -> web.Response:
        await request.read()
        state["open"] += 1
        state["peak"] = max(state["peak"], state["open"])
        try:
            await asyncio.sleep(delay)
        finally:
            state["open"] -= 1
        return web.json_response({"ok": True})

    async def peak(request: web.Request) -> web.Response:
        value = state["peak"]
        state["peak"] = state["open"]
        return web.json_response({"peak": value})

    app = web.Application()
    app.router.add_post("/fast", lambda r: answer(r, DELAY))
    app.router.add_post("/slow", lambda r: answer(r, SLOW))
    app.router.add_get("/peak", peak)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=4096)


class Endpoint:
    """The endpoint's process, on a free port of 127.0.0.1."""

    def __enter__(self) -> Endpoint:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "serve", str(port)])
        for _ in range(200):
            try:
                self.peak()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the benchmark's HTTP endpoint did not start")

    def peak(self) -> int:
        """Most calls open at once since the last reading."""
        with urllib.request.urlopen(self.url + "/peak", timeout=5) as response:
            return json.loads(response.read())["peak"]

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def raw_calls(url: str, n: int, in_flight: int) -> float:
    """Calls/s of a bare aiohttp ClientSession posting n calls, ``in_flight`` at a time."""
    import aiohttp

    async def run() -> float:
        connector = aiohttp.TCPConnector(limit=in_flight, limit_per_host=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            slots = asyncio.Semaphore(in_flight)

            async def one(i: int) -> None:
                async with slots, session.post(url, json={"n": i}) as response:
                    await response.read()

            started = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            return n / (time.perf_counter() - started)

    return asyncio.run(run())


def worker_calls(
    url: str,
    n: int,
    async_slots: int,
    start_worker: Callable[..., subprocess.Popen],
    stop: Callable[[subprocess.Popen], None],
    peak_rss_mb: Callable[[subprocess.Popen], float],
    endpoint: Endpoint | None = None,
) -> tuple[float, float, int]:
    """(calls/s, peak RSS MB, most calls open at the endpoint) of one ``runworkers -a`` process.

    The clock starts at the first finished call, as the drain workload's does: the worker's
    start-up is not the queue's throughput.
    """
    from django_supaqueue import enqueue_http_many
    from django_supaqueue.models import Job, Queue

    Job.objects.all().delete()
    Queue.objects.update_or_create(name="bench_http", defaults={"http_url": url})
    for start in range(0, n, 1000):
        enqueue_http_many("bench_http", [{"n": i} for i in range(start, min(n, start + 1000))])
    if endpoint is not None:
        endpoint.peak()
    proc = start_worker("-q", "bench_http", "-c", "1", "-a", str(async_slots), "--poll-interval", "1")
    done = Job.objects.filter(queue__name="bench_http", status=Job.Status.SUCCESSFUL)
    try:
        while not done.exists():
            time.sleep(0.01)
        first = time.perf_counter()
        base = done.count()
        while (finished := done.count()) < n:
            time.sleep(0.05)
        rate = (finished - base) / (time.perf_counter() - first)
        rss = peak_rss_mb(proc)
    finally:
        stop(proc)
    return rate, rss, endpoint.peak() if endpoint is not None else 0


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    serve(int(sys.argv[2]))

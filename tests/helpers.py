"""What the tests share besides fixtures: polling, the test database's URL, worker processes, HTTP servers.

Fixtures stay in ``conftest.py``, which pytest loads by itself; tests import these by name.
"""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from django.db import connection

from django_supaqueue.models import Job, Worker

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.05) -> object:
    """Poll until ``predicate()`` is truthy; fail the test with a clear message otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


def database_url() -> str:
    """The test database as a URL, for the processes a test starts (workers, commands)."""
    s = connection.settings_dict
    auth = s["USER"] or "postgres"
    if s["PASSWORD"]:
        auth += f":{s['PASSWORD']}"
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class WorkerProcesses:
    """``manage.py runworkers`` processes against the test database, stopped at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []

    def start(
        self, *args: str, env: dict[str, str] | None = None, prefix: Sequence[str] = ()
    ) -> subprocess.Popen:
        """``prefix``: what runs the command (tests/netns.py's, to run it on another host)."""
        log = open(self.log_dir / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "django", "runworkers", "--settings=tests.settings", *args],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "DATABASE_URL": database_url(), "PYTHONPATH": str(ROOT), **(env or {})},
        )
        self.procs.append(proc)
        return proc

    def wait_ready(self, count: int, timeout: float = 30.0) -> None:
        wait_for(lambda: Worker.objects.count() >= count, timeout)

    def log(self, proc: subprocess.Popen) -> str:
        return (self.log_dir / f"worker-{self.procs.index(proc)}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def runs(label: str) -> list:
    """The Execution rows of one label, oldest first: each run of a test task's body that records itself."""
    from tests.testapp.models import Execution

    return list(Execution.objects.filter(label=label).order_by("started"))


def finished(job: Job) -> bool:
    """Whether the job has ended (succeeded, failed for good or cancelled), reading it again."""
    job.refresh_from_db()
    return job.status in (Job.Status.SUCCESSFUL, Job.Status.FAILED, Job.Status.CANCELLED)


def job_statuses() -> dict[str, int]:
    from django.db.models import Count

    return dict(Job.objects.values_list("status").annotate(n=Count("id")))


#: The admin queue form's required fields, at their defaults.
QUEUE_FORM_DEFAULTS = {
    "execution_mode": "threads",
    "limit_scope": "queue",
    "rate_period": "1.0",
    "http_method": "POST",
    "http_headers": "{}",
    "http_secret_header": "Authorization",
}


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """The test endpoints' request handler: HTTP/1.1 keep-alive, no request log on the test output."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""


class LocalServer:
    """An endpoint on a free port of 127.0.0.1, its handler served on daemon threads."""

    def serve(self, handler: type) -> None:
        import threading

        class Server(http.server.ThreadingHTTPServer):
            request_queue_size = 256  # a burst of connections must not wait for SYN retransmits
            daemon_threads = True

        self.httpd = Server(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class RecordingServer(LocalServer):
    """A threaded HTTP server on 127.0.0.1 that answers from a script and records every request.

    ``script(path)`` returns a list of responses (status, headers, body, delay)
    used in turn per path; the last one repeats.
    """

    def __init__(self) -> None:
        import threading

        self.requests: list[dict] = []
        self.scripts: dict[str, list[tuple[int, dict, bytes, float]]] = {}
        self._served: dict[str, int] = {}
        self._lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0
        outer = self

        class Handler(QuietHandler):
            def _handle(self) -> None:
                arrived = time.time()
                body = self.read_body()
                from urllib.parse import parse_qsl, urlsplit

                parts = urlsplit(self.path)
                with outer._lock:
                    outer.requests.append(
                        {
                            "method": self.command,
                            "path": parts.path,
                            "query": parse_qsl(parts.query, keep_blank_values=True),
                            "headers": dict(self.headers),
                            "body": body,
                            "at": arrived,
                        }
                    )
                    steps = outer.scripts.get(parts.path) or [(200, {}, b'{"ok": true}', 0.0)]
                    n = outer._served.get(parts.path, 0)
                    outer._served[parts.path] = n + 1
                    status, headers, payload, delay = steps[min(n, len(steps) - 1)]
                    outer.in_flight += 1
                    outer.peak = max(outer.peak, outer.in_flight)
                try:
                    if delay:
                        time.sleep(delay)
                    self.send_response(status)
                    headers = {"Content-Type": "application/json", **headers}
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with outer._lock:
                        outer.in_flight -= 1

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.serve(Handler)

    def script(self, path: str, *steps: tuple) -> None:
        self.scripts[path] = [
            (s[0], s[1] if len(s) > 1 else {}, s[2] if len(s) > 2 else b"{}", s[3] if len(s) > 3 else 0.0)
            for s in steps
        ]

"""HTTP queues against a real HTTP server on 127.0.0.1: response rules, retries, paths, secrets, limits."""

import json
import logging
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from django_supaqueue import enqueue_http
from django_supaqueue.checks import check_http_secrets
from django_supaqueue.exceptions import InvalidOption
from django_supaqueue.models import Job, JobEvent, Queue
from tests.helpers import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "s3cr3t-value-that-must-never-be-stored"


def http_queue(server, name="hooks", **fields):
    fields.setdefault("http_url", server.url + "/fn")
    return Queue.objects.create(name=name, **fields)


def history(job):
    return list(JobEvent.objects.filter(job=job).order_by("id").values_list("kind", "http_status"))


def test_a_2xx_response_is_a_success_with_status_and_body_stored(drain, http_server):
    http_queue(http_server)
    http_server.script("/fn", (200, {}, b'{"answer": 42}'))
    job = enqueue_http("hooks", {"order": 7})
    assert job.task_name == ""
    drain(["hooks"])
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCESSFUL
    assert job.result == {"status": 200, "body": {"answer": 42}}
    assert history(job) == [("started", None), ("succeeded", 200)]
    (req,) = http_server.requests
    assert req["method"] == "POST" and req["path"] == "/fn"
    assert json.loads(req["body"]) == {"order": 7}
    assert req["headers"]["Content-Type"] == "application/json"


def test_the_response_body_is_stored_size_capped(drain, http_server, settings):
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "HTTP_MAX_RESPONSE_BYTES": 10}
    http_queue(http_server)
    http_server.script("/fn", (200, {"Content-Type": "text/plain"}, b"x" * 1000))
    job = enqueue_http("hooks", {})
    drain(["hooks"])
    job.refresh_from_db()
    assert job.result == {"status": 200, "body": "x" * 10, "truncated": True}


def test_a_500_is_retried_and_every_status_is_in_the_history(drain, http_server):
    http_queue(http_server)
    http_server.script("/fn", (500, {}, b"boom"), (200, {}, b"{}"))
    job = enqueue_http("hooks", {})
    drain(["hooks"])
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCESSFUL and job.attempts == 2
    assert history(job) == [("started", None), ("retried", 500), ("started", None), ("succeeded", 200)]
    retried = JobEvent.objects.get(job=job, kind="retried")
    assert "HTTP 500" in retried.error_message and "boom" in retried.error_message


def test_a_429_waits_as_long_as_retry_after_says(drain, http_server):
    http_queue(http_server)
    http_server.script("/fn", (429, {"Retry-After": "30"}, b""))
    job = enqueue_http("hooks", {})
    before = timezone.now()
    drain(["hooks"])  # burst: leaves the job waiting for its retry
    job.refresh_from_db()
    assert job.status == Job.Status.PENDING and job.attempts == 1
    assert before + timedelta(seconds=29) <= job.run_at <= timezone.now() + timedelta(seconds=31)
    assert history(job) == [("started", None), ("retried", 429)]


def test_a_timeout_is_retried(drain, http_server):
    http_queue(http_server, timeout=0.3, max_attempts=2)
    http_server.script("/fn", (200, {}, b"{}", 2.0), (200, {}, b"{}"))
    job = enqueue_http("hooks", {})
    drain(["hooks"])
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCESSFUL and job.attempts == 2
    retried = JobEvent.objects.get(job=job, kind="retried")
    # The client's own name: httpx's on a job thread, aiohttp's on the async lane.
    assert retried.error_class in ("httpx.ReadTimeout", "aiohttp.SocketTimeoutError")
    assert retried.http_status is None


def test_a_refused_connection_is_retried_then_fails(drain):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    Queue.objects.create(name="down", http_url=f"http://127.0.0.1:{port}/fn", max_attempts=2)
    job = enqueue_http("down", {})
    drain(["down"])
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and job.attempts == 2
    assert [k for k, _ in history(job)] == ["started", "retried", "started", "failed"]
    connect_errors = ("httpx.ConnectError", "aiohttp.ClientConnectorError")  # a thread's, the async lane's
    assert JobEvent.objects.filter(job=job, error_class__in=connect_errors).count() == 2


def test_a_404_fails_for_good_without_retry(drain, http_server):
    http_queue(http_server, max_attempts=5)
    http_server.script("/fn", (404, {}, b"not here"))
    job = enqueue_http("hooks", {})
    drain(["hooks"])
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and job.attempts == 1
    assert history(job) == [("started", None), ("failed", 404)]
    assert len(http_server.requests) == 1


def test_a_queue_may_retry_client_errors(drain, http_server):
    http_queue(http_server, max_attempts=2, http_retry_client_errors=True)
    http_server.script("/fn", (404, {}, b""), (200, {}, b"{}"))
    job = enqueue_http("hooks", {})
    drain(["hooks"])
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCESSFUL and job.attempts == 2


def test_get_sends_the_payload_as_query_parameters(drain, http_server):
    http_queue(http_server, http_method="GET")
    job = enqueue_http("hooks", {"q": "pg queue", "page": 2, "tags": ["a", "b"], "on": True}, path="search")
    drain(["hooks"])
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCESSFUL
    (req,) = http_server.requests
    assert req["method"] == "GET" and req["path"] == "/fn/search" and req["body"] == b""
    # jsonb keeps no key order; repeated names keep theirs
    assert sorted(req["query"]) == [
        ("on", "true"),
        ("page", "2"),
        ("q", "pg queue"),
        ("tags", "a"),
        ("tags", "b"),
    ]


def test_the_path_is_appended_to_the_base_url(drain, http_server):
    http_queue(http_server, http_method="PUT")
    enqueue_http("hooks", {"x": 1}, path="orders/7")
    drain(["hooks"])
    (req,) = http_server.requests
    assert req["method"] == "PUT" and req["path"] == "/fn/orders/7"


@pytest.mark.parametrize(
    "path",
    [
        "//evil.example",
        "../x",
        "a/../../x",
        "http://x",
        "https://evil.example/a",
        "a\\b",
        "a//b",
        "x?y=1",
        "%2e%2e/x",
        "javascript:alert(1)",
    ],
)
def test_paths_that_could_leave_the_base_url_are_rejected(http_server, path):
    http_queue(http_server)
    with pytest.raises(InvalidOption, match="relative path"):
        enqueue_http("hooks", {}, path=path)
    assert not Job.objects.exists()


def test_only_http_queues_take_http_jobs():
    Queue.objects.create(name="python")
    with pytest.raises(InvalidOption, match="not an HTTP queue"):
        enqueue_http("python", {})
    with pytest.raises(InvalidOption, match="not an HTTP queue"):
        enqueue_http("missing", {})


@pytest.mark.parametrize(
    "url", ["ftp://host/x", "/relative", "http://", "http://user:pw@host/", "file:///etc"]
)
def test_queue_urls_are_validated_at_save_time(url):
    with pytest.raises(ValueError):
        Queue.objects.create(name="bad", http_url=url)
    with pytest.raises(ValidationError):
        Queue(name="bad", http_url=url).full_clean()


def test_the_secret_is_sent_but_never_stored_or_logged(drain, http_server, settings, caplog):
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "HTTP_SECRETS": {"edge": SECRET}}
    http_queue(http_server, http_secret="edge", max_attempts=2, http_headers={"X-Team": "ops"})
    http_queue(
        http_server,
        name="signed",
        http_url=http_server.url + "/signed",
        http_secret="edge",
        http_secret_header="X-Webhook-Secret",
    )
    http_server.script("/fn", (500, {}, b"upstream down"), (200, {}, b"{}"))
    caplog.set_level(logging.DEBUG)
    a = enqueue_http("hooks", {"n": 1})
    b = enqueue_http("signed", {"n": 2})
    drain(["hooks", "signed"])
    by_path = {r["path"]: r for r in http_server.requests}
    assert by_path["/fn"]["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert by_path["/fn"]["headers"]["X-Team"] == "ops"
    assert by_path["/signed"]["headers"]["X-Webhook-Secret"] == SECRET
    assert Job.objects.get(pk=a.pk).status == Job.Status.SUCCESSFUL
    assert Job.objects.get(pk=b.pk).status == Job.Status.SUCCESSFUL
    stored = [list(Job.objects.values()), list(JobEvent.objects.values()), list(Queue.objects.values())]
    assert SECRET not in str(stored)
    assert SECRET not in caplog.text
    assert "upstream down" in str(stored)  # the failures were recorded, just not the secret


def test_a_missing_secret_alias_fails_the_job_and_the_check(drain, http_server, settings):
    http_queue(http_server, http_secret="nope")
    errors = check_http_secrets(databases=["default"])
    assert [e.id for e in errors] == ["supaqueue.E008"] and "'nope'" in errors[0].msg
    job = enqueue_http("hooks", {})
    drain(["hooks"])
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and "not in SUPAQUEUE['HTTP_SECRETS']" in job.last_error
    assert http_server.requests == []
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "HTTP_SECRETS": {"nope": "x"}}
    assert check_http_secrets(databases=["default"]) == []


def test_the_concurrency_cap_holds_for_http_calls(drain, http_server):
    http_queue(http_server, concurrency_limit=2)
    http_server.script("/fn", (200, {}, b"{}", 0.3))
    for n in range(8):
        enqueue_http("hooks", {"n": n})
    drain(["hooks"], concurrency=6)
    assert Job.objects.filter(status=Job.Status.SUCCESSFUL).count() == 8
    assert http_server.peak == 2


def test_the_rate_limit_holds_in_every_sliding_window_across_three_processes(worker_processes, http_server):
    limit, n = 20, 70
    http_queue(http_server, rate_limit=limit, rate_period=1.0)
    # Calls of 0.4 s on 5 slots: one process can start at most about 12 a second, so the
    # others take part in every window (with quick calls, whichever woke first could take
    # all 20 of each window, and did on a loaded machine).
    http_server.scripts["/fn"] = [(200, {}, b'{"ok": true}', 0.4)]
    for i in range(n):
        enqueue_http("hooks", {"n": i})
    # A wider margin than the default: on a loaded 2-core test machine the time from claim to the
    # request's arrival (and its recording here) can exceed 0.1 s. The assertion below is still the
    # exact 1 s window.
    for _ in range(3):
        worker_processes.start(
            "-q", "hooks", "-c", "10", "-a", "5", env={"SUPAQUEUE_RATE_LIMIT_MARGIN": "0.5"}
        )
    wait_for(lambda: Job.objects.filter(status=Job.Status.SUCCESSFUL).count() == n, 60)
    times = sorted(r["at"] for r in http_server.requests)
    assert len(times) == n
    worst = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert worst <= limit, worst
    assert times[-1] - times[0] >= (n // limit) - 0.5  # it was really held back
    assert len({e.worker_name for e in JobEvent.objects.filter(kind="started")}) >= 2


@pytest.mark.parametrize(
    ("path", "expected"), [("orders/7", "orders/7"), ("/orders", "orders"), ("a-b_c.d/e~f", "a-b_c.d/e~f")]
)
def test_plain_relative_paths_are_accepted(path, expected):
    from django_supaqueue.handlers.calls import build_url
    from django_supaqueue.validators import check_path

    assert check_path(path) == expected
    assert build_url("https://api.example.com/v1/", path) == f"https://api.example.com/v1/{expected}"


def test_retry_after_takes_seconds_or_a_date_and_is_capped():
    from datetime import UTC, datetime

    from django_supaqueue.handlers.calls import retry_after

    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after("120", now) == now + timedelta(seconds=120)
    assert retry_after("Thu, 01 Jan 2026 00:05:00 GMT", now) == now + timedelta(minutes=5)
    assert retry_after("99999999", now) == now + timedelta(days=1)
    assert retry_after("Wed, 31 Dec 2025 00:00:00 GMT", now) == now  # a date in the past: now
    assert retry_after("soon", now) is None and retry_after(None, now) is None


def test_a_rate_limited_call_reached_too_late_is_given_back_unsent(http_server):
    import time

    from django_supaqueue import queue as q
    from django_supaqueue.handlers.http import perform_http
    from django_supaqueue.worker.connection import connect

    http_queue(http_server, rate_limit=5)
    job = enqueue_http("hooks", {})
    with connect() as conn:
        worker_id = q.register_worker(conn, name="late", host="h", pid=1, queues=None, concurrency=1)
        with conn.transaction():
            (claimed,) = q.claim(
                conn, worker_id=worker_id, worker_name="late", queues=["hooks"], limit=1, lease_seconds=30
            )
        claimed.received = time.monotonic() - 5  # as if the worker had stalled for 5 s
        outcome = perform_http(claimed)
        assert outcome.uncounted and outcome.error_class == "django_supaqueue.exceptions.RateSlotMissed"
        with conn.transaction():
            q.fail(conn, worker_id=worker_id, worker_name="late", failures=[outcome])
    assert http_server.requests == []
    job.refresh_from_db()
    assert job.status == Job.Status.PENDING and job.attempts == 0 and job.run_at <= timezone.now()
    assert [k for k, _ in history(job)] == ["started", "retried"]


def test_a_model_change_can_call_an_http_queue(drain, http_server):
    from django_supaqueue.change_jobs import enqueue_on_delete, enqueue_on_save
    from tests.factories import TicketFactory

    http_queue(http_server)
    http_server.script("/fn", (200, {}, b"{}"))
    saved = enqueue_on_save("testapp.Ticket", on="create", payload=["title", "status"], http_queue="hooks")
    deleted = enqueue_on_delete("testapp.Ticket", http_queue="hooks")
    try:
        ticket = TicketFactory(title="printer on fire")
        ticket_id = ticket.pk
        ticket.delete()
    finally:
        saved.disconnect()
        deleted.disconnect()
    jobs = list(Job.objects.order_by("id"))
    assert [j.task_name for j in jobs] == ["", ""] and {j.queue.name for j in jobs} == {"hooks"}
    drain(["hooks"])
    bodies = sorted((json.loads(r["body"]) for r in http_server.requests), key=len)
    assert bodies == [{"id": ticket_id}, {"title": "printer on fire", "status": "open"}]
    assert set(Job.objects.values_list("status", flat=True)) == {Job.Status.SUCCESSFUL}

"""HTTP queue secrets: never stored when an endpoint echoes them, and sent only to the hosts they are for.

Every call goes to a real HTTP server on 127.0.0.1; the secret is then looked for in everything the
queue keeps about the call: the job row, its events, the log, and the pages that show them.
"""

import json
import logging

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from django_supaqueue import checks, enqueue_http
from django_supaqueue.models import Job, JobEvent, Queue
from tests.helpers import QUEUE_FORM_DEFAULTS, LocalServer, QuietHandler

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "s3cr3t-edge-key-that-must-never-be-stored"


class EchoServer(LocalServer):
    """An endpoint on 127.0.0.1 that sends the request's headers back, as a careless one would.

    ``/echo`` answers 200 with the headers as JSON, once as sent and once with every character
    \\u-escaped; ``/text`` answers them as plain text, and ``/tail`` answers 100 bytes then the
    Authorization header; ``/fail`` answers 500 with the Authorization header in the status text, a
    response header and the body.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        outer = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                self.read_body()
                headers = dict(self.headers)
                outer.requests.append(headers)
                sent = " ".join(f"{k}: {v}" for k, v in headers.items())
                escaped = "".join(f"\\u{ord(c):04x}" for c in sent)
                status, reason, content_type = 200, "OK", "application/json"
                body = f'{{"headers": {json.dumps(headers)}, "escaped": "{escaped}"}}'.encode()
                if self.path.startswith("/text"):
                    content_type, body = "text/plain", sent.encode()
                elif self.path.startswith("/tail"):
                    content_type, body = "text/plain", b"x" * 100 + headers["Authorization"].encode()
                elif self.path.startswith("/fail"):
                    status, reason = 500, f"Refused {headers.get('Authorization', '')}"
                self.send_response(status, reason)
                self.send_header("Content-Type", content_type)
                self.send_header("X-Echo", sent)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.serve(Handler)


@pytest.fixture
def echo_server():
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def secrets(settings):
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "HTTP_SECRETS": {"edge": SECRET}}


def stored(job):
    """Everything the database keeps about a job, as one string."""
    return str(
        [list(Job.objects.filter(pk=job.pk).values()), list(JobEvent.objects.filter(job=job).values())]
    )


def test_a_secret_echoed_in_a_successful_response_is_stored_redacted(drain, echo_server, secrets, caplog):
    Queue.objects.create(name="hooks", http_url=echo_server.url + "/echo", http_secret="edge")
    Queue.objects.create(name="text", http_url=echo_server.url + "/text", http_secret="edge")
    caplog.set_level(logging.DEBUG)
    json_job = enqueue_http("hooks", {"n": 1})
    text_job = enqueue_http("text", {"n": 2})
    drain(["hooks", "text"])
    assert {r["Authorization"] for r in echo_server.requests} == {f"Bearer {SECRET}"}
    json_job.refresh_from_db()
    text_job.refresh_from_db()
    assert json_job.status == text_job.status == Job.Status.SUCCESSFUL
    assert json_job.result["body"]["headers"]["Authorization"] == "Bearer [secret]"
    assert json_job.result["body"]["escaped"].count("Bearer [secret]") == 1  # decoded, then redacted
    assert "Authorization: Bearer [secret]" in text_job.result["body"]
    assert SECRET not in stored(json_job) + stored(text_job)
    assert SECRET not in caplog.text


def test_a_secret_cut_by_the_response_size_cap_leaves_no_part_of_it(drain, echo_server, secrets, settings):
    half = len(SECRET) // 2
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "HTTP_MAX_RESPONSE_BYTES": 100 + len("Bearer ") + half}
    Queue.objects.create(name="hooks", http_url=echo_server.url + "/tail", http_secret="edge")
    job = enqueue_http("hooks", {})
    drain(["hooks"])
    job.refresh_from_db()
    assert job.result["truncated"] is True and job.result["body"] == "x" * 100 + "Bearer "
    assert SECRET[:half] not in stored(job)


def test_a_secret_echoed_in_an_error_response_is_kept_out_of_errors_events_and_logs(
    drain, echo_server, secrets, caplog
):
    Queue.objects.create(name="hooks", http_url=echo_server.url + "/fail", http_secret="edge", max_attempts=2)
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log the status text and response headers too
    job = enqueue_http("hooks", {})
    drain(["hooks"], async_concurrency=0)  # on a job thread, with httpx, whose logs are checked
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and job.attempts == 2
    assert "HTTP 500" in job.last_error and "Bearer [secret]" in job.last_error
    assert SECRET not in stored(job)
    assert "Refused Bearer [secret]" in caplog.text  # the status text was logged, redacted
    assert SECRET not in caplog.text


def test_the_admin_dashboard_and_job_api_never_show_an_echoed_secret(
    drain, echo_server, secrets, settings, admin_client
):
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "API_TOKEN": "api-token"}
    Queue.objects.create(name="hooks", http_url=echo_server.url + "/echo", http_secret="edge")
    Queue.objects.create(name="fails", http_url=echo_server.url + "/fail", http_secret="edge", max_attempts=1)
    jobs = [enqueue_http("hooks", {}), enqueue_http("fails", {})]
    drain(["hooks", "fails"])
    pages = [admin_client.get(reverse("admin:supaqueue_dashboard_data")).content]
    for job in jobs:
        pages.append(admin_client.get(reverse("admin:supaqueue_job_change", args=[job.pk])).content)
        pages.append(admin_client.get(f"/queue/jobs/{job.pk}", HTTP_X_SUPAQUEUE_TOKEN="api-token").content)
    assert all(b"[secret]" in page for page in pages[1:])
    assert not any(SECRET.encode() in page for page in pages)


def test_a_secret_no_header_can_carry_fails_the_call_without_showing_it(drain, echo_server, settings, caplog):
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "HTTP_SECRETS": {"edge": SECRET + "\n"}}  # read from a file
    Queue.objects.create(name="hooks", http_url=echo_server.url + "/echo", http_secret="edge")
    assert [e.id for e in checks.check_http_secrets()] == ["supaqueue.E007"]
    caplog.set_level(logging.DEBUG)
    job = enqueue_http("hooks", {})
    drain(["hooks"])
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and "'edge'" in job.last_error
    assert echo_server.requests == []
    assert SECRET not in stored(job) and SECRET not in caplog.text


# -- where a secret may go ----------------------------------------------------


def bind(settings, *hosts):
    settings.SUPAQUEUE = {
        **settings.SUPAQUEUE,
        "HTTP_SECRETS": {"edge": {"value": SECRET, "hosts": list(hosts)}, "plain": "plain-value"},
    }


def test_a_queue_url_outside_its_alias_hosts_fails_model_validation(settings):
    bind(settings, "fn.example.com")
    Queue(name="ok", http_url="https://FN.example.com/functions/v1", http_secret="edge").full_clean()
    Queue(name="unbound", http_url="https://anywhere.example/x", http_secret="plain").full_clean()
    with pytest.raises(ValidationError, match="fn.example.com"):
        Queue(name="away", http_url="https://attacker.example/x", http_secret="edge").full_clean()
    with pytest.raises(ValueError, match="fn.example.com"):
        Queue.objects.create(name="away", http_url="https://attacker.example/x", http_secret="edge")


def test_a_staff_user_cannot_point_a_bound_alias_at_their_own_host(staff_client, settings, echo_server):
    bind(settings, "fn.example.com")
    queue = Queue.objects.create(
        name="edge", http_url="https://fn.example.com/functions/v1", http_secret="edge"
    )
    client = staff_client("view_queue", "change_queue")
    response = client.post(
        reverse("admin:supaqueue_queue_change", args=[queue.pk]),
        {**QUEUE_FORM_DEFAULTS, "http_url": echo_server.url + "/echo", "http_secret": "edge"},
    )
    assert response.status_code == 200
    assert "fn.example.com" in str(response.context["adminform"].form.errors)
    queue.refresh_from_db()
    assert queue.http_url == "https://fn.example.com/functions/v1"


def test_a_queue_row_moved_off_its_alias_hosts_is_refused_at_call_time(drain, echo_server, settings):
    bind(settings, "fn.example.com")
    Queue.objects.create(name="edge", http_url="https://fn.example.com/functions/v1", http_secret="edge")
    Queue.objects.filter(name="edge").update(http_url=echo_server.url + "/echo")  # past every form
    job = enqueue_http("edge", {})
    drain(["edge"])
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and job.attempts == 1
    assert "'edge'" in job.last_error and "fn.example.com" in job.last_error
    assert echo_server.requests == []  # not the secret, not anything


def test_a_bound_alias_is_sent_to_its_host(drain, echo_server, settings):
    bind(settings, "127.0.0.1")
    Queue.objects.create(name="hooks", http_url=echo_server.url + "/echo", http_secret="edge")
    job = enqueue_http("hooks", {})
    drain(["hooks"])
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCESSFUL
    assert [r["Authorization"] for r in echo_server.requests] == [f"Bearer {SECRET}"]


def test_an_alias_bound_to_no_host_gets_a_warning(settings):
    bind(settings, "fn.example.com")
    (warning,) = checks.check_http_secret_hosts()
    assert warning.id == "supaqueue.W007" and "'plain'" in warning.msg
    assert checks.check_http_secrets() == []
    settings.SUPAQUEUE = {
        **settings.SUPAQUEUE,
        "HTTP_SECRETS": {"edge": {"value": SECRET, "hosts": ["x.io"]}},
    }
    assert checks.check_http_secret_hosts() == []


@pytest.mark.parametrize(
    "entry",
    [
        {"value": SECRET},
        {"value": SECRET, "hosts": []},
        {"value": SECRET, "hosts": "fn.example.com"},
        {"value": 7, "hosts": ["fn.example.com"]},
        {"value": SECRET, "hosts": ["fn.example.com"], "host": "x"},
    ],
)
def test_a_malformed_secret_entry_is_a_check_error(settings, entry):
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "HTTP_SECRETS": {"edge": entry}}
    assert [e.id for e in checks.check_http_secrets()] == ["supaqueue.E007"]


# -- loopback and link-local destinations -------------------------------------

LOCAL_URLS = [
    "http://169.254.169.254/latest/meta-data",
    "http://[::1]:8000/fn",
    "http://127.0.0.1/fn",
    "http://127.1.2.3/fn",
    "http://localhost:8000/fn",
    "http://[fe80::1]/fn",
    "http://[::ffff:169.254.169.254]/fn",
    "http://0.0.0.0/fn",
]


@pytest.mark.parametrize("url", LOCAL_URLS)
def test_local_destinations_are_refused_when_the_setting_says_so(settings, url):
    Queue(name="local", http_url=url).full_clean()  # allowed by default
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "HTTP_REFUSE_LOCAL_HOSTS": True}
    with pytest.raises(ValidationError, match="HTTP_REFUSE_LOCAL_HOSTS"):
        Queue(name="local", http_url=url).full_clean()
    Queue(name="public", http_url="https://fn.example.com/x").full_clean()


def test_a_name_that_leads_to_a_local_address_is_refused_at_call_time(drain, echo_server, settings):
    Queue.objects.create(name="hooks", http_url="https://fn.example.com/fn")
    port = echo_server.url.rsplit(":", 1)[1]
    Queue.objects.filter(name="hooks").update(http_url=f"http://localhost:{port}/echo")
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "HTTP_REFUSE_LOCAL_HOSTS": True}
    job = enqueue_http("hooks", {})
    drain(["hooks"])
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and job.attempts == 1
    assert "HTTP_REFUSE_LOCAL_HOSTS" in job.last_error
    assert echo_server.requests == []

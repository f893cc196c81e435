"""The run endpoint and the job API: token auth, manual retries, owner and tenant isolation."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from django_supaqueue import enqueue_http
from django_supaqueue.models import Job, JobEvent, Queue, Worker

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "run-token-for-tests"


@pytest.fixture
def api(settings):
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "API_TOKEN": TOKEN}
    return Client()


def token(tenant=None):
    headers = {"HTTP_X_SUPAQUEUE_TOKEN": TOKEN}
    if tenant:
        headers["HTTP_X_SUPAQUEUE_TENANT"] = tenant
    return headers


def user_client(name):
    user = get_user_model().objects.create_user(name, password="pw")
    client = Client()
    client.force_login(user)
    return user, client


def post_json(client, url, body, **headers):
    return client.post(url, json.dumps(body), content_type="application/json", **headers)


# -- the run endpoint ---------------------------------------------------------


def test_run_runs_up_to_limit_jobs_in_the_request_and_reports_them(api, http_server):
    Queue.objects.create(name="hooks", http_url=http_server.url + "/fn")
    http_server.script("/fn", (200, {}, b'{"done": true}'))
    jobs = [enqueue_http("hooks", {"n": n}) for n in range(3)]
    response = api.post("/queue/run?queue=hooks&status=pending&limit=2", **token())
    assert response.status_code == 200
    data = response.json()
    assert [j["id"] for j in data["jobs"]] == [jobs[0].pk, jobs[1].pk]
    assert all(j["status"] == "successful" for j in data["jobs"])
    assert data["jobs"][0]["result"] == {"status": 200, "body": {"done": True}}
    assert Job.objects.get(pk=jobs[2].pk).status == Job.Status.PENDING
    assert len(http_server.requests) == 2
    assert not Worker.objects.exists()  # the request's worker identity is gone


def test_run_reports_failures_with_their_retry(api, http_server):
    Queue.objects.create(name="hooks", http_url=http_server.url + "/fn", max_attempts=2)
    http_server.script("/fn", (503, {}, b"busy"))
    job = enqueue_http("hooks", {})
    (entry,) = api.post("/queue/run?queue=hooks", **token()).json()["jobs"]
    assert entry["id"] == job.pk and entry["status"] == "pending" and "HTTP 503" in entry["error"]


def test_run_with_status_failed_gives_failed_jobs_one_more_attempt(api, http_server):
    Queue.objects.create(name="hooks", http_url=http_server.url + "/fn", max_attempts=1)
    http_server.script("/fn", (500, {}, b""), (200, {}, b"{}"))
    job = enqueue_http("hooks", {})
    other = enqueue_http("hooks", {}, run_at=None)
    api.post("/queue/run?queue=hooks&limit=1", **token())
    assert Job.objects.get(pk=job.pk).status == Job.Status.FAILED
    response = api.post("/queue/run?queue=hooks&status=failed&limit=5", **token())
    (entry,) = response.json()["jobs"]
    assert entry["id"] == job.pk and entry["status"] == "successful"
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCESSFUL and job.attempts == 2
    kinds = list(JobEvent.objects.filter(job=job).order_by("id").values_list("kind", flat=True))
    assert kinds == ["started", "failed", "manual_retry", "started", "succeeded"]
    assert Job.objects.get(pk=other.pk).status == Job.Status.PENDING  # only failed jobs were run


def test_run_runs_python_tasks_too(api):
    from tests.testapp import tasks

    job = tasks.add.enqueue(2, 3)
    (entry,) = api.post("/queue/run?queue=default", **token()).json()["jobs"]
    assert entry == {"id": job.pk, "attempt": 1, "status": "successful", "result": 5}


@pytest.mark.parametrize("headers", [{}, {"HTTP_X_SUPAQUEUE_TOKEN": "wrong"}, {"HTTP_X_SUPAQUEUE_TOKEN": ""}])
def test_run_refuses_a_missing_or_wrong_token(api, http_server, headers):
    Queue.objects.create(name="hooks", http_url=http_server.url + "/fn")
    job = enqueue_http("hooks", {})
    assert api.post("/queue/run?queue=hooks", **headers).status_code == 401
    assert Job.objects.get(pk=job.pk).status == Job.Status.PENDING and http_server.requests == []


def test_run_is_closed_when_no_token_is_configured(settings):
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "API_TOKEN": None}
    assert Client().post("/queue/run?queue=default", HTTP_X_SUPAQUEUE_TOKEN="None").status_code == 401


def test_run_refuses_a_logged_in_user(api):
    _, client = user_client("ada")
    assert client.post("/queue/run?queue=default").status_code == 401


@pytest.mark.parametrize(
    "query",
    ["queue=hooks&status=running", "queue=hooks&limit=0", "queue=hooks&limit=x", "queue=hooks&limit=999"],
)
def test_run_validates_its_parameters(api, query):
    Queue.objects.create(name="hooks", http_url="http://127.0.0.1:9/fn")
    assert api.post(f"/queue/run?{query}", **token()).status_code == 400


def test_run_on_an_unknown_queue_is_a_404(api):
    assert api.post("/queue/run?queue=nope", **token()).status_code == 404


# -- the job API ---------------------------------------------------------------


def test_a_user_creates_jobs_they_own_and_reads_them(api, http_server):
    Queue.objects.create(name="hooks", http_url=http_server.url + "/fn")
    ada, client = user_client("ada")
    response = post_json(client, "/queue/jobs", {"queue": "hooks", "payload": {"x": 1}, "path": "a/b"})
    assert response.status_code == 201, response.content
    created = response.json()
    job = Job.objects.get(pk=created["id"])
    assert job.owner_id == ada.pk and job.http_path == "a/b" and job.payload == {"x": 1}
    got = client.get(f"/queue/jobs/{job.pk}").json()
    assert got["status"] == "pending" and got["attempts"] == 0 and got["events"] == []


def test_jobs_are_validated_like_enqueue(api, http_server):
    Queue.objects.create(name="hooks", http_url=http_server.url + "/fn")
    _, client = user_client("ada")
    for body in (
        {"queue": "hooks", "path": "//evil.example"},
        {"queue": "hooks", "path": "../x"},
        {"queue": "hooks", "priority": 1000},
        {"queue": "nope"},
        {"task": "no.such.task"},
        {"task": "tests.testapp.tasks.add", "args": [1]},
        {"queue": "hooks", "url": "http://evil.example"},
        {"queue": "hooks", "payload": [1, 2]},
        {"queue": "hooks", "path": 7},
    ):
        assert post_json(client, "/queue/jobs", body).status_code == 400, body
    assert not Job.objects.exists()


def test_a_task_job_can_be_created_through_the_api(api):
    response = post_json(api, "/queue/jobs", {"task": "tests.testapp.tasks.add", "args": [1, 2]}, **token())
    assert response.status_code == 201
    assert Job.objects.get(pk=response.json()["id"]).task_name == "tests.testapp.tasks.add"


def test_another_users_job_is_a_404(api, http_server):
    Queue.objects.create(name="hooks", http_url=http_server.url + "/fn")
    _, ada = user_client("ada")
    _, bob = user_client("bob")
    job_id = post_json(ada, "/queue/jobs", {"queue": "hooks"}).json()["id"]
    assert ada.get(f"/queue/jobs/{job_id}").status_code == 200
    assert bob.get(f"/queue/jobs/{job_id}").status_code == 404
    token_job = post_json(api, "/queue/jobs", {"queue": "hooks"}, **token()).json()["id"]
    assert ada.get(f"/queue/jobs/{token_job}").status_code == 404  # jobs nobody owns are not a user's
    assert api.get(f"/queue/jobs/{job_id}", **token()).status_code == 200


def test_tenants_see_only_their_own_jobs(api, http_server):
    Queue.objects.create(name="hooks", http_url=http_server.url + "/fn")
    job_id = post_json(api, "/queue/jobs", {"queue": "hooks"}, **token("tenant-a")).json()["id"]
    assert Job.objects.get(pk=job_id).tenant_id == "tenant-a"
    assert api.get(f"/queue/jobs/{job_id}", **token("tenant-a")).status_code == 200
    assert api.get(f"/queue/jobs/{job_id}", **token("tenant-b")).status_code == 404
    _, ada = user_client("ada")
    mine = post_json(ada, "/queue/jobs", {"queue": "hooks"}, HTTP_X_SUPAQUEUE_TENANT="tenant-a").json()["id"]
    assert ada.get(f"/queue/jobs/{mine}", HTTP_X_SUPAQUEUE_TENANT="tenant-a").status_code == 200
    assert ada.get(f"/queue/jobs/{mine}", HTTP_X_SUPAQUEUE_TENANT="tenant-b").status_code == 404
    assert ada.get(f"/queue/jobs/{job_id}", HTTP_X_SUPAQUEUE_TENANT="tenant-a").status_code == 404


def test_the_job_api_needs_authentication(api, http_server):
    Queue.objects.create(name="hooks", http_url=http_server.url + "/fn")
    job = enqueue_http("hooks", {})
    anonymous = Client()
    assert post_json(anonymous, "/queue/jobs", {"queue": "hooks"}).status_code == 401
    assert anonymous.get(f"/queue/jobs/{job.pk}").status_code == 401
    assert anonymous.get(f"/queue/jobs/{job.pk}", HTTP_X_SUPAQUEUE_TOKEN="wrong").status_code == 401
    assert Job.objects.count() == 1


def test_session_posts_need_a_csrf_token(api, http_server):
    Queue.objects.create(name="hooks", http_url=http_server.url + "/fn")
    user = get_user_model().objects.create_user("ada", password="pw")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert post_json(client, "/queue/jobs", {"queue": "hooks"}).status_code == 403


def test_a_job_shows_its_attempts_and_result(api, http_server, drain):
    Queue.objects.create(name="hooks", http_url=http_server.url + "/fn")
    http_server.script("/fn", (500, {}, b""), (200, {}, b'{"ok": 1}'))
    _, ada = user_client("ada")
    job_id = post_json(ada, "/queue/jobs", {"queue": "hooks"}).json()["id"]
    drain(["hooks"])
    got = ada.get(f"/queue/jobs/{job_id}").json()
    assert got["status"] == "successful" and got["attempts"] == 2
    assert got["result"] == {"status": 200, "body": {"ok": 1}}
    assert [(e["kind"], e["http_status"]) for e in got["events"]] == [
        ("started", None),
        ("retried", 500),
        ("started", None),
        ("succeeded", 200),
    ]

"""What an HTTP queue's call carries, against a real server on 127.0.0.1 that records every request.

A job may choose its own HTTP method (else its queue's, as it is when the call
is made), and every call says which job and attempt it is, with an
``Idempotency-Key`` that stays the same on every attempt, so that an endpoint
can do its work once however often it is called.
"""

import json

import pytest
from django.test import Client

from django_supaqueue import Pipeline, enqueue_http
from django_supaqueue.exceptions import InvalidOption
from django_supaqueue.models import Job, Queue

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "http-calls-token"


def http_queue(server, name="hooks", **fields):
    return Queue.objects.create(name=name, http_url=server.url + "/fn", **fields)


def requests_of(server, job):
    return [r for r in server.requests if r["headers"].get("X-Supaqueue-Job-Id") == str(job.pk)]


# -- the method ---------------------------------------------------------------------------


def test_a_job_may_call_with_a_method_of_its_own(drain, http_server):
    http_queue(http_server)  # POST, the queue's default
    put = enqueue_http("hooks", {"n": 1}, path="items/1", method="PUT")
    get = enqueue_http("hooks", {"n": 2}, method="GET")
    drain(["hooks"])
    (put_call,) = requests_of(http_server, put)
    assert (put_call["method"], put_call["path"]) == ("PUT", "/fn/items/1")
    assert json.loads(put_call["body"]) == {"n": 1}
    (get_call,) = requests_of(http_server, get)
    assert (get_call["method"], get_call["query"], get_call["body"]) == ("GET", [("n", "2")], b"")
    assert Job.objects.get(pk=put.pk).http_method == "PUT"


def test_a_job_without_a_method_calls_with_its_queues_as_it_is_at_the_call(drain, http_server):
    queue = http_queue(http_server, http_method="PATCH")
    job = enqueue_http("hooks", {"n": 1})
    assert job.http_method == ""
    Queue.objects.filter(pk=queue.pk).update(http_method="DELETE")  # changed while the job waited
    drain(["hooks"])
    (call,) = requests_of(http_server, job)
    assert call["method"] == "DELETE"


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "", "post ", 7, ["PUT"]])
def test_a_method_the_queue_could_not_have_is_refused_and_nothing_is_written(http_server, method):
    http_queue(http_server)
    with pytest.raises(InvalidOption, match="method") as refused:
        enqueue_http("hooks", {}, method=method)
    assert "GET, POST, PUT, PATCH or DELETE" in str(refused.value)
    assert not Job.objects.exists()


def test_a_lower_case_method_is_taken_in_upper_case(http_server):
    http_queue(http_server)
    assert enqueue_http("hooks", {}, method="put").http_method == "PUT"


@pytest.mark.parametrize("how", ["with a key to replace", "with a dependency", "in a pipeline"])
def test_every_way_of_writing_a_call_keeps_its_method(http_server, how):
    http_queue(http_server)
    if how == "with a key to replace":
        enqueue_http("hooks", {"v": 1}, key="k", key_mode="replace", method="PUT")
        job = enqueue_http("hooks", {"v": 2}, key="k", key_mode="replace", method="DELETE")
    elif how == "with a dependency":
        first = enqueue_http("hooks", {})
        job = enqueue_http("hooks", {}, method="DELETE", depends_on=[first])
    else:
        pipeline = Pipeline()
        first = pipeline.add_http("hooks", {})
        pipeline.add_http("hooks", {}, method="DELETE", depends_on=[first])
        job = pipeline.enqueue()[-1]
    assert job.http_method == "DELETE"
    assert Job.objects.get(pk=job.pk).http_method == "DELETE"


# -- the job's identity ----------------------------------------------------------------------


def test_every_call_says_which_job_and_attempt_it_is(drain, http_server):
    http_queue(http_server, http_headers={"X-Static": "kept"})
    job = enqueue_http("hooks", {})
    drain(["hooks"])
    (call,) = requests_of(http_server, job)
    headers = call["headers"]
    assert headers["Idempotency-Key"] == f"supaqueue-{job.pk}"
    assert (headers["X-Supaqueue-Job-Id"], headers["X-Supaqueue-Attempt"]) == (str(job.pk), "1")
    assert headers["X-Static"] == "kept"


def test_the_idempotency_key_is_the_same_on_every_attempt(drain, http_server):
    http_queue(http_server)
    http_server.script("/fn", (503, {}, b"busy"), (200, {}, b"{}"))
    job = enqueue_http("hooks", {})
    drain(["hooks"])
    calls = requests_of(http_server, job)
    assert [c["headers"]["X-Supaqueue-Attempt"] for c in calls] == ["1", "2"]
    assert {c["headers"]["Idempotency-Key"] for c in calls} == {f"supaqueue-{job.pk}"}
    assert Job.objects.get(pk=job.pk).status == Job.Status.SUCCESSFUL


# -- the job API --------------------------------------------------------------------------------


@pytest.fixture
def api(settings):
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "API_TOKEN": TOKEN}
    return Client()


def post_job(api, body):
    return api.post(
        "/queue/jobs", json.dumps(body), content_type="application/json", HTTP_X_SUPAQUEUE_TOKEN=TOKEN
    )


def test_the_job_api_takes_a_method_and_shows_the_one_the_call_uses(api, http_server):
    http_queue(http_server)
    created = post_job(api, {"queue": "hooks", "payload": {"n": 1}, "method": "PUT"})
    assert created.status_code == 201, created.content
    assert created.json()["method"] == "PUT"
    default = post_job(api, {"queue": "hooks", "payload": {"n": 2}})
    assert default.json()["method"] == "POST"  # the queue's
    ran = api.post("/queue/run?queue=hooks&limit=2", HTTP_X_SUPAQUEUE_TOKEN=TOKEN)
    assert [j["status"] for j in ran.json()["jobs"]] == ["successful", "successful"]
    by_job = {r["headers"]["X-Supaqueue-Job-Id"]: r["method"] for r in http_server.requests}
    assert by_job == {str(created.json()["id"]): "PUT", str(default.json()["id"]): "POST"}
    shown = api.get(f"/queue/jobs/{created.json()['id']}", HTTP_X_SUPAQUEUE_TOKEN=TOKEN)
    assert shown.json()["method"] == "PUT"


@pytest.mark.parametrize(
    "body",
    [
        {"queue": "hooks", "method": "TRACE"},
        {"queue": "hooks", "method": ["PUT"]},
        {"task": "tests.testapp.tasks.noop", "method": "PUT"},
    ],
    ids=["unknown", "not a string", "on a task"],
)
def test_the_job_api_refuses_a_bad_method_with_a_400_naming_it(api, http_server, body):
    http_queue(http_server)
    response = post_job(api, body)
    assert response.status_code == 400 and "method" in response.json()["error"]
    assert not Job.objects.exists()

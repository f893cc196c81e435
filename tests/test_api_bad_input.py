"""The HTTP door answers malformed input with a 4xx naming what is wrong, writes nothing, and never a 500.

The named cases are the ones that once answered 500; the property-based tests
throw hostile bodies, headers, query strings and methods at the run endpoint
and the job API.
"""

import json
from urllib.parse import quote, urlencode

import pytest
from django.test import Client
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from django_supaqueue.models import Job, JobEvent, Queue, Worker

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "fuzz-token"
FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def api(settings):
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "API_TOKEN": TOKEN}
    Queue.objects.create(name="hooks", http_url="http://127.0.0.1:9/fn")  # an HTTP queue; never called
    return Client()


def written():
    """What a request could have written, counted."""
    return (Job.objects.count(), Queue.objects.count(), JobEvent.objects.count(), Worker.objects.count())


def post_json(client, body, **headers):
    return client.post("/queue/jobs", json.dumps(body), content_type="application/json", **headers)


def assert_refused(response, field):
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]


# -- the cases that answered 500 -----------------------------------------------------


@pytest.mark.parametrize(
    "run_at", ["2030-13-45T99:00:00", "2030-02-30T10:00:00", "0001-01-01T00:00:00+14:00"]
)
def test_a_run_at_that_is_no_date_is_a_400_naming_it(api, run_at):
    before = written()
    body = {"task": "tests.testapp.tasks.noop", "run_at": run_at}
    assert_refused(post_json(api, body, HTTP_X_SUPAQUEUE_TOKEN=TOKEN), "run_at")
    assert written() == before


@pytest.mark.parametrize(
    "body",
    [
        {"task": "tests.testapp.tasks.ticket_row", "payload": {"row": "a\u0000b"}},
        {"task": "tests.testapp.tasks.ticket_row", "payload": {"row": {"k\u0000": 1}}},
        {"task": "tests.testapp.tasks.add", "args": ["\ud800", 1]},
        {"queue": "hooks", "payload": {"x": "a\u0000b"}},
    ],
    ids=["task payload", "a key", "args", "HTTP payload"],
)
def test_a_payload_with_nul_or_a_lone_surrogate_is_a_400_naming_it(api, body):
    before = written()
    response = post_json(api, body, HTTP_X_SUPAQUEUE_TOKEN=TOKEN)
    assert_refused(response, "args" if "args" in body else "payload")
    assert written() == before


@pytest.mark.parametrize("tenant", ["t" * 256, "t\x00"])
def test_a_tenant_header_that_cannot_be_stored_is_a_400_naming_it(api, tenant):
    before = written()
    headers = {"HTTP_X_SUPAQUEUE_TOKEN": TOKEN, "HTTP_X_SUPAQUEUE_TENANT": tenant}
    assert_refused(post_json(api, {"task": "tests.testapp.tasks.noop"}, **headers), "X-Supaqueue-Tenant")
    assert_refused(post_json(api, {"queue": "hooks"}, **headers), "X-Supaqueue-Tenant")
    assert_refused(api.get("/queue/jobs/1", **headers), "X-Supaqueue-Tenant")
    assert written() == before


@pytest.mark.parametrize(
    "body, field",
    [
        ({"task": "tests.testapp.tasks.noop", "max_attempts": 2**40}, "max_attempts"),
        ({"task": "tests.testapp.tasks.noop", "key": "k\u0000"}, "key"),
        ({"task": "tests.testapp.tasks.noop", "queue": ["default"]}, "queue"),
        ({"task": ["tests.testapp.tasks.noop"]}, "task"),
        ({"task": "tests.testapp.broken_tasks.anything"}, "task"),
        ({"queue": "hooks", "path": "a\ud800"}, "path"),
        ({"queue": "hooks", "method": "TRACE"}, "method"),
        ({"queue": "hooks", "method": "P\u0000T"}, "method"),
    ],
    ids=[
        "max_attempts",
        "key",
        "queue",
        "task",
        "task in a module that fails to import",
        "path",
        "method",
        "method with NUL",
    ],
)
def test_other_fields_postgresql_or_python_could_not_take_are_a_400_naming_them(api, body, field):
    before = written()
    assert_refused(post_json(api, body, HTTP_X_SUPAQUEUE_TOKEN=TOKEN), field)
    assert written() == before


def test_a_body_nested_too_deeply_for_the_json_parser_is_a_400(api):
    response = api.post(
        "/queue/jobs", b"[" * 100_000, content_type="application/json", HTTP_X_SUPAQUEUE_TOKEN=TOKEN
    )
    assert_refused(response, "JSON")


@pytest.mark.parametrize("queue", ["a\x00b", "x" * 500])
def test_the_run_endpoint_refuses_a_queue_name_that_cannot_exist(api, queue):
    response = api.post("/queue/run?" + urlencode({"queue": queue}), HTTP_X_SUPAQUEUE_TOKEN=TOKEN)
    assert_refused(response, "queue")


def test_a_key_held_by_a_job_out_of_the_callers_scope_is_a_409_not_a_500(api):
    body = {"task": "tests.testapp.tasks.noop", "key": "shared"}
    first = post_json(api, body, HTTP_X_SUPAQUEUE_TOKEN=TOKEN, HTTP_X_SUPAQUEUE_TENANT="a")
    assert first.status_code == 201
    before = written()
    second = post_json(api, body, HTTP_X_SUPAQUEUE_TOKEN=TOKEN, HTTP_X_SUPAQUEUE_TENANT="b")
    assert second.status_code == 409 and "key" in second.json()["error"]
    assert written() == before


# -- fuzzing ---------------------------------------------------------------------------

SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)
HOSTILE_TEXT = st.one_of(
    st.text(st.one_of(st.characters(exclude_categories=()), SURROGATES), max_size=12),
    st.sampled_from(
        [
            "",
            "\x00",
            "\ud800",
            "a" * 300,
            "default",
            "hooks",
            "../etc",
            "2030-13-45T99:00:00",
            "9999-12-31T23:59:59-14:00",
            "0001-01-01T00:00:00+14:00",
            "2030-01-01T10:00:00Z",
            "tests.testapp.tasks.add",
            "tests.testapp.broken_tasks.x",
            "\x00.x",
            "os.path",
        ]
    ),
)
NUMBERS = st.one_of(
    st.integers(),
    st.sampled_from([0, -1, 2**15, 2**31, 2**63, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, HOSTILE_TEXT)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(HOSTILE_TEXT, inner, max_size=3),
    max_leaves=8,
)
FIELDS = {
    "queue": st.one_of(st.sampled_from(["default", "hooks", "fuzzed"]), JSON),
    "task": st.one_of(
        st.sampled_from(
            ["tests.testapp.tasks.add", "tests.testapp.tasks.noop", "tests.testapp.tasks.ticket_row"]
        ),
        JSON,
    ),
    "payload": st.one_of(
        st.fixed_dictionaries({"a": JSON, "b": JSON}), st.fixed_dictionaries({"row": JSON}), JSON
    ),
    "args": st.one_of(st.lists(JSON, max_size=3), JSON),
    "path": JSON,
    "method": st.one_of(st.sampled_from(["GET", "PUT", "delete", "TRACE", "P\x00T"]), JSON),
    "priority": st.one_of(NUMBERS, JSON),
    "run_at": st.one_of(HOSTILE_TEXT, JSON),
    "key": st.one_of(HOSTILE_TEXT, JSON),
    "max_attempts": st.one_of(NUMBERS, JSON),
    "unknown": JSON,
}
#: Requests that would be accepted, to change a field or two of: most of them reach the enqueue.
VALID_BODIES = st.sampled_from(
    [
        {"task": "tests.testapp.tasks.add", "payload": {"a": 1, "b": 2}},
        {"task": "tests.testapp.tasks.noop", "key": "k"},
        {"task": "tests.testapp.tasks.ticket_row", "payload": {"row": {}}, "queue": "fuzzed"},
        {"queue": "hooks", "payload": {"n": 1}, "path": "a/b"},
        {"queue": "hooks", "payload": {"n": 1}, "method": "PUT"},
    ]
)
ONE_FIELD = st.sampled_from(sorted(FIELDS)).flatmap(
    lambda name: FIELDS[name].map(lambda value: {name: value})
)
CHANGED_BODIES = st.builds(
    lambda body, changes: {**body, **{k: v for change in changes for k, v in change.items()}},
    VALID_BODIES,
    st.lists(ONE_FIELD, max_size=2),
)
BODIES = st.one_of(
    # json.dumps writes NaN and Infinity, as a careless client would send them.
    CHANGED_BODIES.map(lambda body: json.dumps(body).encode()),
    CHANGED_BODIES.map(lambda body: json.dumps(body).encode()),
    st.fixed_dictionaries({}, optional=FIELDS).map(lambda body: json.dumps(body).encode()),
    JSON.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=40),
)
HEADER_TEXT = st.text(st.characters(max_codepoint=0xFF), max_size=300)  # WSGI decodes headers as latin-1
CALLERS = st.sampled_from(["token", "token", "token", "session", "nobody"])


def mostly_none(strategy, percent=70):
    """None ``percent`` times out of a hundred, else a value of ``strategy``: most requests stay plain."""
    return st.integers(1, 100).flatmap(lambda n: st.none() if n <= percent else strategy)


BAD_TOKENS = mostly_none(st.one_of(st.just(""), HEADER_TEXT))  # override the caller's token
TENANTS = mostly_none(st.one_of(st.sampled_from(["a", "b", "t" * 256, "t\x00"]), HEADER_TEXT), 50)
METHODS = st.sampled_from(["POST"] * 12 + ["GET", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
CONTENT_TYPES = st.sampled_from(
    ["application/json"] * 3 + ["text/plain", "application/x-www-form-urlencoded"]
)


@pytest.fixture
def callers(api, django_user_model):
    """A client per kind of caller: one with the token, one logged in, one that is neither."""
    session = Client()
    session.force_login(django_user_model.objects.create_user("fuzz", password="pw"))
    return {"token": api, "session": session, "nobody": Client()}


def request(
    callers, caller, method, path, body=b"", content_type="application/json", tenant=None, token=None
):
    headers = {"HTTP_X_SUPAQUEUE_TOKEN": TOKEN} if caller == "token" else {}
    if token is not None:
        headers["HTTP_X_SUPAQUEUE_TOKEN"] = token
    if tenant is not None:
        headers["HTTP_X_SUPAQUEUE_TENANT"] = tenant
    return callers[caller].generic(method, path, body, content_type=content_type, **headers)


def assert_answered_without_a_500(response, before):
    event(f"HTTP {response.status_code}")  # --hypothesis-show-statistics shows how far requests got
    assert response.status_code < 500, response.content
    if response.status_code >= 400:
        assert written() == before
    if response.status_code == 400:
        assert isinstance(response.json()["error"], str)


@FUZZ
@given(
    caller=CALLERS,
    method=METHODS,
    body=BODIES,
    content_type=CONTENT_TYPES,
    tenant=TENANTS,
    token=BAD_TOKENS,
)
@example(
    caller="token",
    method="POST",
    body=b'{"task": "tests.testapp.tasks.noop", "run_at": "2030-13-45T99:00:00"}',
    content_type="application/json",
    tenant=None,
    token=None,
)
@example(
    caller="token",
    method="POST",
    body=b'{"queue": "hooks", "payload": {"x": "\\u0000"}}',
    content_type="application/json",
    tenant=None,
    token=None,
)
@example(
    caller="session",
    method="POST",
    body=b'{"task": "tests.testapp.tasks.noop"}',
    content_type="application/json",
    tenant="t" * 256,
    token=None,
)
def test_no_request_to_create_a_job_is_answered_with_a_500(
    callers, caller, method, body, content_type, tenant, token
):
    before = written()
    response = request(callers, caller, method, "/queue/jobs", body, content_type, tenant, token)
    assert_answered_without_a_500(response, before)


@pytest.fixture
def job_ids(callers):
    """Jobs to read: one of tenant "a" made with the token, one of the logged-in user."""
    by_token = post_json(callers["token"], {"task": "tests.testapp.tasks.noop"}, HTTP_X_SUPAQUEUE_TOKEN=TOKEN)
    by_user = post_json(callers["session"], {"queue": "hooks"}, HTTP_X_SUPAQUEUE_TENANT="a")
    return [str(by_token.json()["id"]), str(by_user.json()["id"])]


#: A job to read: mostly one of job_ids (its index), else any path segment.
JOBS = st.integers(1, 100).flatmap(
    lambda n: (
        st.integers(0, 1)
        if n <= 60
        else st.one_of(
            st.integers(min_value=0).map(str), st.sampled_from(["2147483648", "1" + "0" * 30]), HOSTILE_TEXT
        )
    )
)


@FUZZ
@given(
    job=JOBS,
    caller=CALLERS,
    method=st.sampled_from(["GET"] * 6 + ["POST", "PUT", "DELETE", "HEAD", "OPTIONS"]),
    tenant=TENANTS,
)
@example(job=0, caller="token", method="GET", tenant="t\x00")
def test_no_request_to_read_a_job_is_answered_with_a_500(callers, job_ids, job, caller, method, tenant):
    segment = job_ids[job] if isinstance(job, int) else job
    before = written()
    path = "/queue/jobs/" + quote(segment.encode("utf-8", "surrogatepass"), safe="")
    assert_answered_without_a_500(request(callers, caller, method, path, tenant=tenant), before)


QUERY = st.dictionaries(
    st.one_of(st.sampled_from(["queue", "status", "limit"]), HOSTILE_TEXT),
    st.one_of(
        st.sampled_from(
            ["hooks", "default", "pending", "failed", "1", "50", "51", "-1", "1" * 5000, "1_0", "\u0661"]
        ),
        HOSTILE_TEXT,
    ),
    max_size=4,
)


@FUZZ
@given(caller=CALLERS, method=METHODS, query=QUERY, token=BAD_TOKENS)
@example(caller="token", method="POST", query={"queue": "a\x00b"}, token=None)
def test_no_request_to_the_run_endpoint_is_answered_with_a_500(callers, caller, method, query, token):
    before = written()
    query = {k.encode("utf-8", "surrogatepass"): v.encode("utf-8", "surrogatepass") for k, v in query.items()}
    response = request(callers, caller, method, "/queue/run?" + urlencode(query), token=token)
    assert_answered_without_a_500(response, before)

"""What PostgreSQL cannot store: refused at enqueue, made storable when an outcome is written.

PostgreSQL's text holds no NUL, psycopg cannot encode a lone surrogate, and jsonb
refuses both as JSON escapes, NaN and Infinity, and numbers past numeric's range.
An enqueue that meets one is refused with a clear error and writes nothing; an
attempt whose outcome meets one is recorded as a failure of that attempt, and
the rest of its batch is written as usual.
"""

from datetime import timedelta

import pytest
from django.db import connection

from django_supaqueue import enqueue_http
from django_supaqueue import queue as q
from django_supaqueue.exceptions import InvalidOption, InvalidPayload
from django_supaqueue.models import CurrentJob, Job, JobEvent, Queue
from django_supaqueue.testing import run_pending
from tests.factories import JobFactory
from tests.helpers import wait_for
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)

NOT_STORABLE = "django_supaqueue.exceptions.ResultNotStorable"


def claim(conn, worker, limit=10):
    return q.claim(
        conn, worker_id=worker.pk, worker_name=worker.name, queues=None, limit=limit, lease_seconds=30
    )


def complete(conn, worker, *successes):
    return q.complete(conn, worker_id=worker.pk, worker_name=worker.name, successes=list(successes))


def fail(conn, worker, *failures):
    return q.fail(conn, worker_id=worker.pk, worker_name=worker.name, failures=list(failures))


def failure(job, **fields):
    values = {"error_class": "ValueError", "error_message": "boom", "traceback": "", "duration": 0.1}
    return q.Failure(job.id, job.attempt, **{**values, **fields})


def last_event(job_id):
    return JobEvent.objects.filter(job_id=job_id).order_by("id").last()


# -- results jsonb refuses ----------------------------------------------------


@pytest.mark.parametrize(
    "result, why",
    [
        ('"a\\u0000b"', "NUL"),
        ('{"key\\u0000": 1}', "NUL"),
        ('["\\ud800"]', "lone surrogate"),
        ('"x\\udc00"', "lone surrogate"),
        ('"\ud800"', "lone surrogate"),  # the character itself, not its escape
        ('"a\x00b"', "not valid JSON"),  # a raw NUL is a control character JSON must escape
        ("1e131072", "numeric"),
        ("[1e-16384]", "numeric"),
        ("1" + "0" * 131072, "numeric"),
        ("1" + "0" * 5000, "numeric"),  # jsonb would store it, but Python could not read it back
        ("NaN", "NaN"),
        ('{"x": -Infinity}', "Infinity"),
    ],
)
def test_a_result_jsonb_refuses_fails_the_attempt_for_good_with_a_clear_error(conn, worker, result, why):
    job = JobFactory()
    [claimed] = claim(conn, worker)
    assert complete(conn, worker, q.Success(claimed.id, claimed.attempt, result, 0.25)) == set()
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and job.result is None
    assert job.last_error.startswith(f"{NOT_STORABLE}: ") and why in job.last_error
    event = last_event(job.pk)
    assert event.kind == JobEvent.Kind.FAILED and event.error_class == NOT_STORABLE
    assert why in event.error_message and event.duration == 0.25
    assert not CurrentJob.objects.exists()


@pytest.mark.parametrize(
    "result",
    [
        '"\\ud83d\\ude00"',  # a surrogate pair is one character
        '"\\\\u0000"',  # an escaped backslash, then "u0000"
        '"caf\u00e9 \U0001f600"',
        "1e4299",
        "[1e-16383, 5e-324, 1.7976931348623157e308]",
        '{"nested": [{"n": null, "t": true, "s": "NaN and Infinity as text"}]}',
    ],
)
def test_a_result_jsonb_accepts_is_stored(conn, worker, result):
    job = JobFactory()
    [claimed] = claim(conn, worker)
    assert complete(conn, worker, q.Success(claimed.id, claimed.attempt, result, 0.1)) == {job.pk}
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCESSFUL
    with connection.cursor() as cur:
        cur.execute("SELECT result = %s::jsonb FROM supaqueue_job WHERE id = %s", [result, job.pk])
        assert cur.fetchone() == (True,)


def test_one_unstorable_outcome_leaves_the_rest_of_its_round_trip_written(conn, worker):
    jobs = [JobFactory() for _ in range(5)]
    claimed = claim(conn, worker)
    *fine, poisoned, raised = claimed
    successes = [q.Success(c.id, c.attempt, f'{{"n": {c.id}}}', 0.1) for c in fine]
    successes.append(q.Success(poisoned.id, poisoned.attempt, '"a\\u0000b"', 0.1))
    text = "x\x00y"
    failures = [failure(raised, error_message=text, traceback=f"ValueError: {text}\n", final=True)]
    JobFactory()  # claimed by the same round trip
    done = q.finish_and_claim(
        conn,
        worker_id=worker.pk,
        worker_name=worker.name,
        successes=successes,
        failures=failures,
        freed_queues=[],
        queues=None,
        limit=10,
        lease_seconds=30,
    )
    assert len(done.jobs) == 1
    assert sorted((r.job_id, r.status) for r in done.retries) == [
        (poisoned.id, "failed"),
        (raised.id, "failed"),
    ]
    statuses = dict(Job.objects.filter(pk__in=[j.pk for j in jobs]).values_list("id", "status"))
    assert [statuses[c.id] for c in fine] == [Job.Status.SUCCESSFUL] * 3
    assert [Job.objects.get(pk=c.id).result for c in fine] == [{"n": c.id} for c in fine]
    assert last_event(poisoned.id).error_class == NOT_STORABLE
    event = last_event(raised.id)
    assert event.error_message == "x\\x00y" and event.traceback == "ValueError: x\\x00y\n"


def test_failure_texts_get_nul_and_lone_surrogates_escaped(conn, worker):
    job = JobFactory(max_attempts=1)
    [claimed] = claim(conn, worker)
    fail(
        conn,
        worker,
        failure(
            claimed, error_class="Bad\x00Error", error_message="x\x00y \ud800", traceback="tb \udfff\x00"
        ),
    )
    event = last_event(job.pk)
    assert event.kind == JobEvent.Kind.FAILED
    assert (event.error_class, event.error_message, event.traceback) == (
        "Bad\\x00Error",
        "x\\x00y \\ud800",
        "tb \\udfff\\x00",
    )
    job.refresh_from_db()
    assert job.last_error == "Bad\\x00Error: x\\x00y \\ud800"


def test_an_error_class_longer_than_its_column_is_cut_to_fit(conn, worker):
    job = JobFactory(max_attempts=1)
    [claimed] = claim(conn, worker)
    fail(conn, worker, failure(claimed, error_class="pkg." + "Nested." * 60 + "Error"))
    event = last_event(job.pk)
    assert len(event.error_class) == 255 and event.error_class.startswith("pkg.Nested.")


def test_numbers_out_of_their_columns_range_are_left_out(conn, worker):
    """An http_status past smallint is dropped; a back-off that is no interval gives way to the queue's."""
    ok, retried = JobFactory(), JobFactory(max_attempts=3)
    first, second = claim(conn, worker)
    assert complete(conn, worker, q.Success(first.id, first.attempt, "1", 0.1, http_status=70_000)) == {ok.pk}
    [retry] = fail(
        conn,
        worker,
        failure(second, http_status=-1, backoff=float("inf"), backoff_max=float("nan")),
    )
    assert retry.status == "pending"
    assert last_event(ok.pk).http_status is None and last_event(retried.pk).http_status is None


# -- the doors that write outcomes ----------------------------------------------


def test_run_pending_records_an_unstorable_result_as_a_failure():
    job = tasks.returns_nul.enqueue()
    assert run_pending() == [job]
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and "NUL" in job.last_error
    assert last_event(job.pk).error_class == NOT_STORABLE


def test_the_run_endpoint_reports_an_unstorable_result_as_a_failure(settings, client, http_server):
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "API_TOKEN": "t"}
    Queue.objects.create(name="hooks", http_url=http_server.url + "/fn", max_attempts=1)
    http_server.script("/fn", (200, {}, b'{"text": "a\\u0000b"}'))
    job = enqueue_http("hooks", {})
    response = client.post("/queue/run?queue=hooks", HTTP_X_SUPAQUEUE_TOKEN="t")
    assert response.status_code == 200
    (entry,) = response.json()["jobs"]
    assert entry["id"] == job.pk and entry["status"] == "failed"
    assert entry["error"].startswith(NOT_STORABLE) and "NUL" in entry["error"]
    assert Job.objects.get(pk=job.pk).status == Job.Status.FAILED


# -- a real worker --------------------------------------------------------------


@pytest.mark.parametrize(
    "poison, error_class, stored",
    [
        (tasks.returns_nul, NOT_STORABLE, "NUL"),
        (tasks.raises_nul, "ValueError", "x\\x00y"),
        (tasks.returns_lone_surrogate, NOT_STORABLE, "lone surrogate"),
    ],
    ids=["returns NUL", "raises NUL", "returns a lone surrogate"],
)
def test_a_worker_records_an_unstorable_outcome_and_carries_on(worker_processes, poison, error_class, stored):
    poisoned = poison.enqueue()
    others = tasks.add.enqueue_many([{"a": n, "b": 1} for n in range(6)])  # claimed in the same batch
    proc = worker_processes.start("-p", "1", "-c", "8")
    finished = (Job.Status.SUCCESSFUL, Job.Status.FAILED)
    wait_for(lambda: Job.objects.filter(status__in=finished).count() == 7 or proc.poll() is not None, 30)
    assert proc.poll() is None, worker_processes.log(proc)
    assert [Job.objects.get(pk=j.pk).result for j in others] == [n + 1 for n in range(6)]
    poisoned.refresh_from_db()
    assert poisoned.status == Job.Status.FAILED
    event = last_event(poisoned.pk)
    assert event.kind == JobEvent.Kind.FAILED and event.error_class == error_class
    assert stored in event.error_message
    later = tasks.add.enqueue(a=2, b=3)
    wait_for(lambda: Job.objects.filter(pk=later.pk, status=Job.Status.SUCCESSFUL).exists(), 10)
    assert proc.poll() is None


# -- enqueue refuses what it could not store --------------------------------------


def nothing_written():
    return not Job.objects.exists()


@pytest.mark.parametrize(
    "enqueue, what",
    [
        (lambda: tasks.ticket_row.enqueue(row={"text": "a\x00b"}), "payload.*NUL"),
        (lambda: tasks.ticket_row.enqueue(row={"key\x00": 1}), "payload.*NUL"),
        (lambda: tasks.ticket_row.enqueue(row=[{"deep": "\ud800"}]), "payload.*lone surrogate"),
        (lambda: tasks.add.enqueue("a\x00", "b"), "args.*NUL"),
        (lambda: tasks.add.enqueue_many([{"a": 1, "b": 2}, {"a": "\udc00", "b": 2}]), "payload.*surrogate"),
    ],
    ids=["NUL in a string", "NUL in a key", "a lone surrogate", "NUL in args", "enqueue_many"],
)
def test_a_payload_jsonb_would_refuse_is_refused_and_nothing_is_written(enqueue, what):
    with pytest.raises(InvalidPayload, match=what):
        enqueue()
    assert nothing_written()


@pytest.mark.parametrize(
    "enqueue, what",
    [
        (lambda: tasks.noop.enqueue(key="k\x00"), "key.*NUL"),
        (lambda: tasks.noop.enqueue(key="\ud800"), "key.*lone surrogate"),
        (lambda: tasks.noop.enqueue_many([{"key": "ok"}, {"key": "k\x00"}]), "key.*NUL"),
        (lambda: tasks.noop.enqueue(serial_group="g\x00"), "serial_group.*NUL"),
        (lambda: tasks.noop.enqueue(max_attempts=2**40), "max_attempts.*2147483647"),
        (lambda: tasks.noop.enqueue_many([{}], max_attempts=2**31), "max_attempts.*2147483647"),
        (lambda: tasks.noop.enqueue(run_at=timedelta(days=10**8)), "run_at"),
    ],
    ids=[
        "NUL in a key",
        "surrogate key",
        "enqueue_many key",
        "serial_group",
        "max_attempts",
        "many",
        "run_at",
    ],
)
def test_an_option_postgresql_cannot_store_is_refused_and_nothing_is_written(enqueue, what):
    with pytest.raises(InvalidOption, match=what):
        enqueue()
    assert nothing_written()


def test_an_http_job_with_a_path_or_tenant_postgresql_cannot_store_is_refused():
    Queue.objects.create(name="hooks", http_url="http://127.0.0.1:9/fn")
    with pytest.raises(InvalidOption, match="path.*lone surrogate"):
        enqueue_http("hooks", {}, path="a\ud800")
    with pytest.raises(InvalidOption, match="tenant_id.*NUL"):
        enqueue_http("hooks", {}, tenant_id="t\x00")
    assert nothing_written()

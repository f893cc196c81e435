"""Enqueueing: the public API, eager validation, transactions, keys and defaults."""

import gc
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone

from django_supaqueue import enqueue, enqueue_many, task
from django_supaqueue.exceptions import InvalidOption, InvalidPayload, ReservedParameter, UnknownTask
from django_supaqueue.models import Job, Queue
from tests.factories import QueueFactory
from tests.testapp import tasks

pytestmark = pytest.mark.django_db


def test_enqueue_returns_a_pending_job_with_its_arguments():
    job = tasks.add.enqueue(2, b=3)

    stored = Job.objects.get(pk=job.pk)
    assert job.status == stored.status == Job.Status.PENDING
    assert stored.task_name == "tests.testapp.tasks.add"
    assert stored.args == [2] and stored.payload == {"b": 3}
    assert stored.attempts == 0 and stored.enabled and stored.key is None
    assert job.created_at == stored.created_at and job.run_at == stored.run_at


def test_enqueue_by_name_validates_against_the_registry():
    job = enqueue("tests.testapp.tasks.add", {"a": 1, "b": 2}, queue="maths")
    assert job.queue.name == "maths"
    with pytest.raises(UnknownTask, match="No task named 'tests.testapp.tasks.nope'"):
        enqueue("tests.testapp.tasks.nope", {})
    assert Job.objects.count() == 1


def test_single_enqueue_is_one_statement_once_the_queue_exists():
    tasks.add.enqueue(1, 1)
    with CaptureQueriesContext(connection) as ctx:
        tasks.add.enqueue(1, 2)
    assert len(ctx.captured_queries) == 1


def prepared_statements():
    with connection.cursor() as cur:
        cur.execute("SELECT statement FROM pg_prepared_statements WHERE statement LIKE %s", ["%INSERT INTO%"])
        return [r[0] for r in cur.fetchall()]


def test_single_enqueue_is_prepared_once_per_connection_and_seen_by_execute_wrappers():
    seen = []

    def wrapper(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        first = tasks.add.enqueue(1, 1)
        second = tasks.add.enqueue(1, 2)
    assert len(prepared_statements()) == 1
    assert len([s for s in seen if "INSERT INTO supaqueue_job" in s]) == 2
    assert Job.objects.filter(pk__in=[first.pk, second.pk]).count() == 2


def test_the_prepared_enqueue_rolls_back_with_the_callers_transaction():
    tasks.add.enqueue(1, 1)
    with pytest.raises(RuntimeError), transaction.atomic():
        tasks.add.enqueue(2, 2)
        raise RuntimeError("the caller's work failed")
    assert Job.objects.count() == 1


@pytest.mark.parametrize(
    "config",
    [
        {"SUPAQUEUE": {"PREPARE_STATEMENTS": False}},
        {"DATABASES": "prepare_threshold=None"},  # a PgBouncer deployment says so explicitly
    ],
)
def test_prepared_statements_can_be_turned_off(config, settings, monkeypatch):
    if "SUPAQUEUE" in config:
        settings.SUPAQUEUE = config["SUPAQUEUE"]
    else:
        options = {**connection.settings_dict.get("OPTIONS", {}), "prepare_threshold": None}
        monkeypatch.setitem(connection.settings_dict, "OPTIONS", options)
    tasks.add.enqueue(1, 1)
    tasks.add.enqueue(1, 2)
    assert prepared_statements() == []
    assert Job.objects.count() == 2


def test_queue_is_created_on_demand_with_settings_defaults():
    with override_settings(SUPAQUEUE={"QUEUES": {"reports": {"concurrency_limit": 2, "max_attempts": 9}}}):
        job = tasks.noop.using(queue="reports").enqueue()
    queue = Queue.objects.get(name="reports")
    assert queue.concurrency_limit == 2 and queue.paused is False
    assert job.max_attempts == 9


@pytest.mark.parametrize(
    "payload",
    [{"when": timezone.now()}, {"obj": object()}, {"nan": float("nan")}],
    ids=["datetime", "object", "nan"],
)
def test_non_json_payload_is_refused_and_nothing_is_written(payload):
    with pytest.raises(InvalidPayload, match="JSON-serialisable"):
        enqueue("tests.testapp.tasks.noop", {"i": payload})
    assert not Job.objects.exists()


def test_arguments_that_do_not_fit_the_signature_are_refused():
    with pytest.raises(InvalidPayload, match="do not fit task tests.testapp.tasks.add"):
        tasks.add.enqueue(1, 2, 3)
    with pytest.raises(InvalidPayload):
        enqueue("tests.testapp.tasks.add", {"a": 1, "c": 2})
    assert not Job.objects.exists()


@pytest.mark.parametrize("priority", [101, -101, 1.5, "high", True])
def test_priority_out_of_range_is_refused(priority):
    with pytest.raises(InvalidOption, match="priority"):
        tasks.noop.enqueue(priority=priority)
    assert not Job.objects.exists()


def test_bad_options_are_refused():
    with pytest.raises(InvalidOption, match="max_attempts"):
        tasks.noop.enqueue(max_attempts=0)
    with pytest.raises(InvalidOption, match="queue name"):
        tasks.noop.enqueue(queue="no spaces")
    with pytest.raises(InvalidOption, match="run_at"):
        tasks.noop.enqueue(run_at="tomorrow")
    assert not Job.objects.exists()


def test_task_refuses_reserved_parameter_names():
    with pytest.raises(ReservedParameter, match="priority"):

        @task
        def clash(priority):
            pass


def test_enqueue_commits_and_rolls_back_with_the_callers_transaction():
    with pytest.raises(RuntimeError), transaction.atomic():
        tasks.noop.enqueue(i=1)
        raise RuntimeError("caller fails after enqueueing")
    assert not Job.objects.exists()

    with transaction.atomic():
        tasks.noop.enqueue(i=2)
    assert Job.objects.count() == 1


def test_precedence_call_then_task_then_queue_then_settings():
    QueueFactory(name="emails", priority=-5, max_attempts=2)
    # send_email declares queue="emails", max_attempts=7, priority=3
    from_task = tasks.send_email.enqueue(to="x")
    assert (from_task.priority, from_task.max_attempts) == (3, 7)
    from_call = tasks.send_email.enqueue(to="x", priority=9, max_attempts=1)
    assert (from_call.priority, from_call.max_attempts) == (9, 1)
    from_queue = tasks.noop.enqueue(queue="emails")
    assert (from_queue.priority, from_queue.max_attempts) == (-5, 2)
    with override_settings(SUPAQUEUE={"PRIORITY": 4, "MAX_ATTEMPTS": 11}):
        from_settings = tasks.noop.enqueue(queue="plain")
    assert (from_settings.priority, from_settings.max_attempts) == (4, 11)


def test_using_sets_options_django_tasks_style():
    run_at = timezone.now() + timedelta(hours=1)
    job = tasks.noop.using(priority=5, run_at=run_at, queue="later").enqueue(i=3)
    assert job.priority == 5 and job.run_at == run_at and job.queue.name == "later"


def test_run_at_accepts_a_timedelta():
    before = timezone.now()
    job = tasks.noop.enqueue(run_at=timedelta(minutes=5))
    assert before + timedelta(minutes=5) <= job.run_at <= timezone.now() + timedelta(minutes=5)


def test_key_dedupes_pending_jobs():
    first = tasks.noop.enqueue(i=1, key="welcome:42")
    second = tasks.noop.enqueue(i=2, key="welcome:42")
    assert second.pk == first.pk and second.payload == {"i": 1}
    Job.objects.filter(pk=first.pk).update(status=Job.Status.SUCCESSFUL)
    third = tasks.noop.enqueue(i=3, key="welcome:42")
    assert third.pk != first.pk


def test_enqueue_many_writes_every_job_in_a_constant_number_of_statements():
    for size in (3, 500):
        with CaptureQueriesContext(connection) as ctx:
            jobs = tasks.noop.enqueue_many([{"i": i} for i in range(size)])
        assert len(ctx.captured_queries) <= 4
        assert [j.payload for j in jobs] == [{"i": i} for i in range(size)]
        assert all(j.pk and j.status == Job.Status.PENDING for j in jobs)
    assert Job.objects.count() == 503


def test_enqueue_many_is_all_or_nothing():
    with pytest.raises(InvalidPayload):
        tasks.noop.enqueue_many([{"i": 1}, {"i": object()}])
    with pytest.raises(InvalidPayload):
        enqueue_many("tests.testapp.tasks.add", [{"a": 1, "b": 1}, {"a": 1}])
    assert not Job.objects.exists()


@pytest.mark.parametrize("collecting", [True, False])
def test_enqueue_many_leaves_the_garbage_collector_as_it_found_it(collecting):
    """The collector is held while a batch's Jobs are built, and given back however the call ends."""
    (gc.enable if collecting else gc.disable)()
    try:
        assert len(tasks.noop.enqueue_many([{"i": i} for i in range(3)])) == 3
        assert gc.isenabled() is collecting
        with pytest.raises(InvalidPayload):
            tasks.noop.enqueue_many([{"i": 1}, {"i": object()}])
        assert gc.isenabled() is collecting
    finally:
        gc.enable()


@pytest.mark.parametrize("keyed", [False, True])
def test_enqueue_many_returns_the_jobs_as_stored_field_by_field(keyed):
    """The rows come back as one row of ids and shared values; each Job must still be its row."""
    held = tasks.noop.enqueue(i=-1, key="k1") if keyed else None
    items = [{"i": i, **({"key": f"k{i}"} if keyed and i % 2 else {})} for i in range(6)]
    run_at = timezone.now() + timedelta(minutes=5)
    jobs = tasks.noop.enqueue_many(items, priority=3, max_attempts=4, run_at=run_at)
    fields = [f.attname for f in Job._meta.concrete_fields]
    for job in jobs:
        stored = Job.objects.get(pk=job.pk)
        assert {f: getattr(job, f) for f in fields} == {f: getattr(stored, f) for f in fields}
    if keyed:
        assert jobs[1].pk == held.pk and jobs[1].payload == {"i": -1}
        assert [j.key for j in jobs] == [None, "k1", None, "k3", None, "k5"]
    else:
        assert [j.payload["i"] for j in jobs] == list(range(6))
        assert {(j.priority, j.max_attempts, j.run_at) for j in jobs} == {(3, 4, run_at)}


def test_enqueue_many_by_name_returns_jobs_in_order():
    jobs = enqueue_many("tests.testapp.tasks.add", [{"a": i, "b": 1} for i in range(4)], priority=2)
    assert [j.payload["a"] for j in jobs] == [0, 1, 2, 3]
    assert {j.priority for j in jobs} == {2}


def test_calling_a_task_runs_it_now():
    assert tasks.add(2, 5) == 7
    assert not Job.objects.exists()


def test_oversized_payload_is_refused(settings):
    settings.SUPAQUEUE = {"MAX_PAYLOAD_BYTES": 1000}
    with pytest.raises(InvalidPayload, match="MAX_PAYLOAD_BYTES"):
        tasks.noop.enqueue(i="x" * 1000)
    assert not Job.objects.exists()


def test_a_queue_with_jobs_cannot_be_deleted_by_the_orm_or_by_sql():
    from django.db import IntegrityError
    from django.db.models import ProtectedError

    job = tasks.noop.using(queue="busy").enqueue()
    busy = Queue.objects.get(name="busy")
    with pytest.raises(ProtectedError):
        busy.delete()
    with (
        pytest.raises(IntegrityError, match="queue busy still has jobs"),
        transaction.atomic(),
        connection.cursor() as cur,
    ):
        cur.execute("DELETE FROM supaqueue_queue WHERE name = 'busy'")
    Job.objects.filter(pk=job.pk).delete()
    busy.delete()
    assert not Queue.objects.filter(name="busy").exists()


@pytest.mark.parametrize(
    "column, value",
    [
        ("status", "'done'"),
        ("priority", "101"),
        ("priority", "-101"),
        ("max_attempts", "0"),
        ("attempts", "-1"),
        ("waiting_for", "-1"),
    ],
)
def test_the_job_rows_invariants_hold_for_sql_and_for_model_validation(column, value):
    """One check constraint (sql/job_is_valid.sql) guards every invariant: raw SQL cannot break a job
    row, and model validation (the admin's forms) asks the same function before anything is written."""
    from django.core.exceptions import ValidationError
    from django.db import IntegrityError

    job = tasks.noop.enqueue(i=1)
    with (
        pytest.raises(IntegrityError, match="supaqueue_job_valid"),
        transaction.atomic(),
        connection.cursor() as cur,
    ):
        cur.execute(f"UPDATE supaqueue_job SET {column} = {value} WHERE id = %s", [job.pk])
    stored = Job.objects.get(pk=job.pk)
    assert stored.status == Job.Status.PENDING and stored.attempts == 0
    setattr(stored, column, value.strip("'") if column == "status" else int(value))
    with pytest.raises(ValidationError, match="A job needs a known status"):
        stored.validate_constraints()
    stored.refresh_from_db()
    stored.priority, stored.max_attempts, stored.attempts = 100, 1, 0
    stored.validate_constraints()
    with connection.cursor() as cur:
        cur.execute(
            "UPDATE supaqueue_job SET status = 'failed', priority = -100, max_attempts = 1 WHERE id = %s",
            [job.pk],
        )
    assert Job.objects.get(pk=job.pk).status == Job.Status.FAILED

"""The Django Tasks backend, used as a Django user would: @task, enqueue(), get_result(), TASKS.

tests/settings.py makes SupaqueueBackend the default backend on Django 6; tests
that need other options use override_settings(TASKS=...). Jobs run under the
real worker (run_worker: the runtime in burst mode, in this process).
"""

import importlib
import threading
from datetime import timedelta

import django
import pytest
from asgiref.sync import async_to_sync
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from django_supaqueue import cancel
from django_supaqueue.checks import check_tasks_backend
from django_supaqueue.exceptions import InvalidPayload
from django_supaqueue.models import Job
from tests.factories import QueueFactory
from tests.testapp import tasks
from tests.testapp.models import Execution

BACKEND = "django_supaqueue.backends.SupaqueueBackend"


def tasks_setting(**params):
    return override_settings(TASKS={"default": {"BACKEND": BACKEND, "QUEUES": [], **params}})


@pytest.fixture
def dt():
    """The test app's Django tasks (a module that only imports on Django 6)."""
    return importlib.import_module("tests.testapp.django_tasks")


@pytest.fixture
def task_signals():
    """Every task_enqueued / task_started / task_finished sent, as (signal, result id, status)."""
    from django.tasks.signals import task_enqueued, task_finished, task_started

    seen = []
    lock = threading.Lock()
    receivers = []
    for name, signal in (("enqueued", task_enqueued), ("started", task_started), ("finished", task_finished)):

        def receiver(sender, task_result, name=name, **kwargs):
            with lock:
                seen.append((name, task_result.id, task_result.status, sender.__name__))

        signal.connect(receiver)
        receivers.append((signal, receiver))
    yield seen
    for signal, receiver in receivers:
        signal.disconnect(receiver)


@pytest.mark.django6
def test_the_backend_declares_what_it_supports():
    from django.tasks import task_backends

    from django_supaqueue.backends import SupaqueueBackend

    backend = task_backends["default"]
    assert isinstance(backend, SupaqueueBackend)
    assert backend.supports_defer and backend.supports_async_task
    assert backend.supports_get_result and backend.supports_priority


@pytest.mark.django6
@pytest.mark.django_db(transaction=True)
def test_an_enqueued_task_is_ready_until_a_worker_runs_it(dt, supaqueue):
    result = dt.multiply.enqueue(6, 7)
    assert result.status == "READY" and result.enqueued_at is not None and not result.is_finished
    assert Job.objects.get(pk=int(result.id)).task_name == "tests.testapp.django_tasks.multiply"
    worker = supaqueue.run_worker()
    result.refresh()
    assert result.status == "SUCCESSFUL" and result.return_value == 42
    assert result.started_at <= result.finished_at and result.last_attempted_at == result.started_at
    assert result.worker_ids == [worker.name] and result.attempts == 1 and result.errors == []
    assert dt.multiply.get_result(result.id).return_value == 42


@pytest.mark.django6
@pytest.mark.django_db(transaction=True)
def test_a_task_that_takes_context_gets_its_result_and_attempt(dt, supaqueue):
    result = dt.describe_attempt.enqueue(label="ctx")
    worker = supaqueue.run_worker()
    result.refresh()
    assert result.return_value == {
        "label": "ctx",
        "attempt": 1,
        "id": result.id,
        "status": "RUNNING",
        "worker_ids": [worker.name],
    }


@pytest.mark.django6
@pytest.mark.django_db(transaction=True)
def test_failed_attempts_are_retried_and_their_errors_kept(dt, supaqueue):
    result = dt.fail_twice.enqueue(n=1)
    supaqueue.run_worker()
    result.refresh()
    assert result.status == "SUCCESSFUL" and result.return_value == 3 and result.attempts == 3
    assert [e.exception_class for e in result.errors] == [ValueError, ValueError]
    assert "attempt 1 failed" in result.errors[0].traceback
    assert "attempt 2 failed" in result.errors[1].traceback


@pytest.mark.django6
@pytest.mark.django_db(transaction=True)
def test_a_task_that_keeps_failing_ends_failed_after_the_backends_max_attempts(dt, supaqueue):
    with tasks_setting(OPTIONS={"max_attempts": 2}):
        result = dt.always_fails.enqueue()
        supaqueue.run_worker()
        result.refresh()
    assert result.status == "FAILED" and result.attempts == 2 and result.is_finished
    assert [e.exception_class for e in result.errors] == [KeyError, KeyError]
    assert "KeyError: 'missing'" in result.errors[-1].traceback
    with pytest.raises(ValueError, match="Task failed"):
        result.return_value  # noqa: B018


@pytest.mark.django6
@pytest.mark.django_db(transaction=True)
def test_signals_are_sent_when_enqueued_started_and_finished(dt, supaqueue, task_signals):
    ok = dt.multiply.enqueue(2, 2)
    with tasks_setting(OPTIONS={"max_attempts": 2}):
        bad = dt.always_fails.enqueue()
        supaqueue.run_worker(concurrency=1)
    assert [s for s in task_signals if s[1] == ok.id] == [
        ("enqueued", ok.id, "READY", "SupaqueueBackend"),
        ("started", ok.id, "RUNNING", "SupaqueueBackend"),
        ("finished", ok.id, "SUCCESSFUL", "SupaqueueBackend"),
    ]
    # A failed attempt that will be retried finishes nothing: the task is READY again.
    assert [s[0] + ":" + s[2] for s in task_signals if s[1] == bad.id] == [
        "enqueued:READY",
        "started:RUNNING",
        "started:RUNNING",
        "finished:FAILED",
    ]


@pytest.mark.django6
@pytest.mark.django_db(transaction=True)
def test_higher_priority_runs_first(dt, supaqueue):
    dt.record.using(priority=-5).enqueue("low", 1)
    dt.record.enqueue("normal", 2)
    dt.record.using(priority=50).enqueue("high", 3)
    supaqueue.run_worker(concurrency=1)
    assert list(Execution.objects.order_by("id").values_list("label", flat=True)) == ["high", "normal", "low"]


@pytest.mark.django6
@pytest.mark.django_db(transaction=True)
def test_run_after_defers_a_task(dt, supaqueue):
    later = dt.record.using(run_after=timezone.now() + timedelta(hours=1)).enqueue("later", 1)
    due = dt.record.using(run_after=timezone.now() - timedelta(seconds=1)).enqueue("due", 2)
    supaqueue.run_worker()
    later.refresh()
    due.refresh()
    assert later.status == "READY" and due.status == "SUCCESSFUL"


@pytest.mark.django6
@pytest.mark.django_db
def test_get_result_gives_back_the_task_with_every_option_it_was_enqueued_with(dt):
    later = timezone.now() + timedelta(hours=1)
    deferred = dt.multiply.using(priority=7, queue_name="reports", run_after=later)
    result = deferred.enqueue(2, 3)
    assert dt.multiply.get_result(result.id).task == deferred
    assert dt.multiply.get_result(dt.multiply.enqueue(2, 3).id).task == dt.multiply  # run_after None


@pytest.mark.django6
@pytest.mark.django_db(transaction=True)
def test_async_tasks_and_the_async_api(dt, supaqueue):
    result = async_to_sync(dt.async_add.aenqueue)(2, 3)
    supaqueue.run_worker()
    fetched = async_to_sync(dt.async_add.aget_result)(result.id)
    assert fetched.status == "SUCCESSFUL" and fetched.return_value == 5


@pytest.mark.django6
@pytest.mark.django_db(transaction=True)
def test_queue_timeouts_apply_to_django_tasks(dt, supaqueue):
    QueueFactory(name="slow", timeout=0.3, max_attempts=1)
    result = dt.spin.using(queue_name="slow").enqueue(30)
    supaqueue.run_worker(queues=["slow"])
    result.refresh()
    assert result.status == "FAILED"
    assert [e.exception_class_path for e in result.errors] == ["django_supaqueue.exceptions.JobTimeout"]


@pytest.mark.django6
@pytest.mark.django_db
def test_a_cancelled_job_is_reported_failed_with_its_reason(dt):
    from django_supaqueue.exceptions import JobCancelled

    result = dt.multiply.enqueue(1, 2)
    cancel([int(result.id)], reason="not needed any more")
    result.refresh()
    assert result.status == "FAILED" and result.finished_at is not None
    assert result.errors[-1].exception_class is JobCancelled
    assert result.errors[-1].traceback == "not needed any more"


@pytest.mark.django6
@pytest.mark.django_db
def test_enqueue_is_part_of_the_callers_transaction(dt):
    from django.tasks.exceptions import TaskResultDoesNotExist

    with pytest.raises(RuntimeError), transaction.atomic():
        result = dt.multiply.enqueue(1, 2)
        raise RuntimeError("rolled back")
    with pytest.raises(TaskResultDoesNotExist):
        dt.multiply.get_result(result.id)


@pytest.mark.django6
@pytest.mark.django_db
def test_bad_tasks_and_arguments_are_refused_before_anything_is_written(dt):
    from django.tasks.exceptions import InvalidTask

    with tasks_setting(QUEUES=["default"]), pytest.raises(InvalidTask, match="Queue 'other' is not valid"):
        dt.multiply.using(queue_name="other")
    with pytest.raises(InvalidTask, match="queue name 'no spaces!' is not valid"):
        dt.multiply.using(queue_name="no spaces!")
    with pytest.raises(InvalidPayload, match="JSON-serialisable"):
        dt.multiply.enqueue(object(), 2)
    with pytest.raises(InvalidPayload, match="Arguments do not fit"):
        dt.multiply.enqueue(1, 2, 3)
    assert not Job.objects.exists()


@pytest.mark.django6
@pytest.mark.django_db
def test_get_result_only_knows_jobs_of_django_tasks(dt):
    from django.tasks import default_task_backend
    from django.tasks.exceptions import TaskResultDoesNotExist

    plain = tasks.add.enqueue(1, 2)
    for result_id in ("999999", "not-a-number", str(plain.pk)):
        with pytest.raises(TaskResultDoesNotExist):
            default_task_backend.get_result(result_id)


@pytest.mark.django6
@pytest.mark.django_db
def test_immediate_mode_runs_django_tasks_too(dt, supaqueue_immediate):
    result = dt.multiply.enqueue(3, 3)
    result.refresh()
    assert result.status == "SUCCESSFUL" and result.return_value == 9


@pytest.mark.django6
def test_the_backend_reports_bad_configuration_in_checks():
    with tasks_setting(QUEUES=["default", "bad name!"], OPTIONS={"retries": 3, "max_attempts": 0}):
        ids = sorted(m.id for m in checks.run_checks() if m.id.startswith("supaqueue."))
    assert ids == ["supaqueue.E021", "supaqueue.E022", "supaqueue.E022"]


@pytest.mark.django6
def test_runworkers_runs_django_tasks(dt, worker_processes):
    from tests.helpers import wait_for

    result = dt.fail_twice.enqueue(n=7)
    worker_processes.start("-c", "2")
    wait_for(lambda: Job.objects.get(pk=int(result.id)).status == Job.Status.SUCCESSFUL, timeout=60)
    result.refresh()
    assert result.return_value == 3 and len(result.worker_ids) == 3


def test_the_backend_module_imports_on_every_django_version():
    from django_supaqueue.backends import SupaqueueBackend

    if django.VERSION < (6, 0):
        with pytest.raises(ImproperlyConfigured, match="needs Django 6.0 or newer"):
            SupaqueueBackend("default", {})
    else:
        assert SupaqueueBackend("default", {}).supports_get_result


def test_naming_the_backend_without_django_tasks_fails_the_checks(settings, monkeypatch):
    monkeypatch.setattr("django_supaqueue.checks.django_tasks_available", lambda: False)
    settings.TASKS = {"default": {"BACKEND": BACKEND}}
    assert [m.id for m in check_tasks_backend()] == ["supaqueue.E013"]
    settings.TASKS = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}
    assert check_tasks_backend() == []

"""A job's tenant (``Job.tenant_id``, @pgpm/jobs' ``database_id``) through every door that makes jobs.

Each door is held to the same two promises: the tenant given reaches the job
row (read back from the database, not from the returned instance), and a bad
tenant ('' or 300 characters or not a string) is refused with an error naming
``tenant_id`` before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.writer import MigrationWriter
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from django_supaqueue import Pipeline, enqueue, enqueue_http, enqueue_many, scheduling
from django_supaqueue.change_jobs import enqueue_on_delete, enqueue_on_save, on_save
from django_supaqueue.checks import check_change_jobs
from django_supaqueue.exceptions import InvalidOption, InvalidSchedule, TriggerConfigError
from django_supaqueue.models import Job, Queue, Schedule
from django_supaqueue.operations import InstallJobTrigger
from tests.factories import ScheduleFactory, TicketFactory
from tests.helpers import database_url
from tests.testapp import tasks
from tests.testapp.models import Product, Ticket

pytestmark = pytest.mark.django_db

NOOP = "tests.testapp.tasks.noop"
BAD_TENANTS = ["", "t" * 300, 42]


def tenants(jobs=None) -> list[str | None]:
    """The tenants of these jobs (else of every job) as stored, in id order."""
    rows = Job.objects.order_by("pk")
    if jobs is not None:
        rows = rows.filter(pk__in=[j.pk for j in jobs])
    return list(rows.values_list("tenant_id", flat=True))


def refused(call) -> None:
    """``call()`` raises InvalidOption naming tenant_id and leaves no job behind."""
    with pytest.raises(InvalidOption, match=r"^tenant_id must be a non-empty string of at most 255"):
        call()
    assert not Job.objects.exists()


# ------------------------------------------------------------------------------------- tasks


def test_task_enqueue_carries_the_tenant():
    job = tasks.noop.enqueue(i=1, tenant_id="acme")
    assert job.tenant_id == "acme" and tenants() == ["acme"]


def test_task_using_carries_the_tenant_to_enqueue_and_enqueue_many():
    tasks.noop.using(tenant_id="acme", priority=3).enqueue(i=1)
    tasks.noop.using(tenant_id="globex").enqueue_many([{"i": 2}, {"i": 3}])
    assert tenants() == ["acme", "globex", "globex"]


def test_a_task_may_not_take_tenant_id_as_a_parameter():
    from django_supaqueue import task
    from django_supaqueue.exceptions import ReservedParameter

    with pytest.raises(ReservedParameter, match="tenant_id"):

        @task
        def clashes(tenant_id): ...


@pytest.mark.parametrize("bad", BAD_TENANTS)
def test_a_bad_tenant_is_refused_by_task_enqueue_and_using(bad):
    refused(lambda: tasks.noop.enqueue(i=1, tenant_id=bad))
    refused(lambda: tasks.noop.using(tenant_id=bad).enqueue(i=1))


def test_a_tenant_with_a_nul_is_refused_naming_it():
    with pytest.raises(InvalidOption, match=r"^tenant_id .* cannot be stored"):
        tasks.noop.enqueue(tenant_id="a\x00b")
    assert not Job.objects.exists()


# --------------------------------------------------------------------------------------- api


def test_api_enqueue_carries_the_tenant():
    enqueue(NOOP, {"i": 1}, tenant_id="acme")
    assert tenants() == ["acme"]


def test_api_enqueue_many_gives_one_tenant_to_all():
    jobs = enqueue_many(NOOP, [{"i": i} for i in range(3)], tenant_id="acme")
    assert [j.tenant_id for j in jobs] == tenants(jobs) == ["acme"] * 3


def test_api_enqueue_many_gives_each_item_its_own_tenant_else_the_calls():
    items = [{"i": 0, "tenant_id": "acme"}, {"i": 1}, {"i": 2, "tenant_id": "globex", "key": "k2"}]
    jobs = enqueue_many(NOOP, items, tenant_id="initech")
    assert [j.tenant_id for j in jobs] == tenants(jobs) == ["acme", "initech", "globex"]
    assert [j.payload for j in jobs] == [{"i": 0}, {"i": 1}, {"i": 2}]  # the options are not arguments
    assert Job.objects.get(key="k2").tenant_id == "globex"


def test_enqueue_many_with_tenants_is_still_a_constant_number_of_statements():
    Queue.objects.get_or_create(name="default")
    for size in (3, 300):
        with CaptureQueriesContext(connection) as one_tenant:
            tasks.noop.enqueue_many([{"i": i} for i in range(size)], tenant_id="acme")
        items = [{"i": i, "tenant_id": f"t{i % 7}"} for i in range(size)]
        with CaptureQueriesContext(connection) as mixed:
            jobs = tasks.noop.enqueue_many(items)
        assert len(one_tenant.captured_queries) <= 4 and len(mixed.captured_queries) <= 4
        assert tenants(jobs) == [f"t{i % 7}" for i in range(size)]


@pytest.mark.parametrize("bad", BAD_TENANTS)
def test_a_bad_tenant_is_refused_by_enqueue_and_enqueue_many_writing_nothing_of_the_batch(bad):
    refused(lambda: enqueue(NOOP, {"i": 1}, tenant_id=bad))
    refused(lambda: enqueue_many(NOOP, [{"i": 1}, {"i": 2}], tenant_id=bad))
    refused(lambda: enqueue_many(NOOP, [{"i": 1, "tenant_id": "acme"}, {"i": 2, "tenant_id": bad}]))
    refused(lambda: enqueue_many(NOOP, [{"i": 1}, {"i": 2, "tenant_id": bad}], tenant_id="acme"))


# ----------------------------------------------------------------------------- HTTP, pipelines


@pytest.fixture
def hooks() -> Queue:
    return Queue.objects.create(name="hooks", http_url="http://127.0.0.1:9/fn")


def test_enqueue_http_carries_the_tenant(hooks):
    enqueue_http("hooks", {"id": 1}, path="orders", tenant_id="acme")
    assert tenants() == ["acme"]


@pytest.mark.parametrize("bad", BAD_TENANTS)
def test_a_bad_tenant_is_refused_by_enqueue_http(hooks, bad):
    refused(lambda: enqueue_http("hooks", {"id": 1}, tenant_id=bad))


def test_a_pipeline_gives_its_tenant_to_steps_that_give_none(hooks):
    p = Pipeline(tenant_id="acme")
    a = p.add(tasks.noop, i=1)
    b = p.add(tasks.noop, i=2, tenant_id="globex", depends_on=[a])
    c = p.add_http("hooks", {"id": 3}, depends_on=[b])
    d = p.add_http("hooks", {"id": 4}, tenant_id="initech", depends_on=[b])
    p.enqueue()
    assert tenants([s.job for s in (a, b, c, d)]) == ["acme", "globex", "acme", "initech"]


def test_a_pipeline_without_a_tenant_gives_each_step_its_own():
    p = Pipeline()
    a = p.add(tasks.noop, i=1, tenant_id="acme")
    b = p.add(tasks.noop, i=2, depends_on=[a])
    p.enqueue()
    assert tenants([a.job, b.job]) == ["acme", None]


@pytest.mark.parametrize("bad", BAD_TENANTS)
def test_a_bad_tenant_is_refused_by_a_pipeline_writing_none_of_its_steps(bad):
    with pytest.raises(InvalidOption, match=r"^tenant_id"):
        Pipeline(tenant_id=bad)

    def enqueue_pipeline():
        p = Pipeline()
        first = p.add(tasks.noop, i=1, tenant_id="acme")
        p.add(tasks.noop, i=2, tenant_id=bad, depends_on=[first])
        p.enqueue()

    refused(enqueue_pipeline)


# ------------------------------------------------------------------------------------- schedules


def fire(schedule: Schedule) -> list[Job]:
    """Fire the hourly schedule's 01:00 tick as a worker would (scheduling.fire_due)."""
    Schedule.objects.filter(pk=schedule.pk).update(next_run_at=datetime(2026, 1, 1, 1, tzinfo=UTC))
    return [tick.job for tick in scheduling.fire_due(now=datetime(2026, 1, 1, 1, 0, 1, tzinfo=UTC))]


def test_the_jobs_a_schedule_fires_carry_its_tenant(hooks):
    (job,) = fire(ScheduleFactory(tenant_id="acme"))
    (call,) = fire(ScheduleFactory(task_name="", queue="hooks", tenant_id="globex"))
    (none,) = fire(ScheduleFactory(tenant_id=""))
    assert tenants([job, call, none]) == ["acme", "globex", None]


def test_a_schedule_with_a_tenant_too_long_is_refused_by_clean():
    schedule = ScheduleFactory.build(tenant_id="t" * 300)
    with pytest.raises(ValidationError) as refusal:
        schedule.full_clean()
    assert list(refusal.value.message_dict) == ["tenant_id"]


def supaqueue_settings(**extra):
    from django.conf import settings

    return {**getattr(settings, "SUPAQUEUE", {}), **extra}


def test_a_schedule_declared_in_settings_takes_a_tenant():
    declared = {"nightly": {"task": NOOP, "cron": "0 * * * *", "tenant_id": "acme"}}
    with override_settings(SUPAQUEUE=supaqueue_settings(SCHEDULES=declared)):
        assert scheduling.sync_declared()["created"] == ["nightly"]
    schedule = Schedule.objects.get(name="nightly")
    assert schedule.tenant_id == "acme"
    (job,) = fire(schedule)
    assert tenants([job]) == ["acme"]


@pytest.mark.parametrize("bad", ["t" * 300, 42])
def test_a_bad_tenant_declared_in_settings_is_refused_at_sync(bad):
    declared = {"nightly": {"task": NOOP, "cron": "0 * * * *", "tenant_id": bad}}
    with (
        override_settings(SUPAQUEUE=supaqueue_settings(SCHEDULES=declared)),
        pytest.raises(InvalidSchedule, match=r"'nightly'.*tenant_id"),
    ):
        scheduling.sync_declared()
    assert not Schedule.objects.exists()


# --------------------------------------------------------------------------- model-change jobs


@pytest.fixture
def connect() -> Iterator:
    made = []

    def connect(register, *args, **kwargs):
        made.append(register(*args, **kwargs))
        return made[-1]

    yield connect
    for registration in made:
        registration.disconnect()


def test_a_model_change_job_takes_its_tenant_from_a_field(connect):
    connect(enqueue_on_save, Ticket, tasks.ticket_changed, on="create", tenant_id="status")
    connect(enqueue_on_delete, Ticket, tasks.ticket_changed, tenant_id="parent")
    parent = TicketFactory(status="acme")
    child = TicketFactory(status="", parent=parent)  # blank: no tenant
    child.delete()  # the parent's id, as text
    assert tenants() == ["acme", None, str(parent.pk)]


def test_a_model_change_job_takes_its_tenant_from_a_callable(connect, hooks):
    connect(enqueue_on_save, Ticket, tasks.ticket_changed, tenant_id=lambda t: f"t-{t.title}")
    connect(enqueue_on_save, Ticket, http_queue="hooks", tenant_id=lambda t: None)
    TicketFactory(title="acme")
    assert sorted(tenants(), key=str) == [None, "t-acme"]


@pytest.mark.parametrize("bad", BAD_TENANTS)
def test_a_bad_tenant_from_a_callable_is_refused_and_the_save_rolled_back(connect, bad):
    connect(enqueue_on_save, Ticket, tasks.ticket_changed, tenant_id=lambda t: bad)
    with pytest.raises(InvalidOption, match=r"^tenant_id"), transaction.atomic():
        TicketFactory()
    assert not Job.objects.exists() and not Ticket.objects.exists()


def test_a_tenant_that_is_neither_a_field_name_nor_a_callable_is_refused():
    with pytest.raises(TriggerConfigError, match="tenant_id must be a field name or a callable"):
        on_save(tasks.ticket_changed, tenant_id=42)


def test_manage_py_check_names_a_tenant_field_that_does_not_exist(connect):
    connect(enqueue_on_save, Ticket, tasks.ticket_changed, tenant_id="tenant")
    assert [m.id for m in check_change_jobs() if "'tenant'" in m.msg] == ["supaqueue.E012"]


def test_declared_change_jobs_take_a_tenant_too():
    job = on_save(tasks.ticket_changed, tenant_id="status")
    assert job.tenant_for(Ticket(status="acme")) == "acme" and job.fields() == ("status",)


# ------------------------------------------------------------------------------ job triggers


def install(operation: InstallJobTrigger) -> None:
    """Run the operation as its migration would (the test's transaction drops it again)."""
    state = MigrationLoader(connection).project_state()
    with connection.schema_editor(atomic=False) as editor:
        operation.database_forwards("testapp", editor, state, state)


def test_a_job_trigger_takes_each_jobs_tenant_from_a_column():
    operation = InstallJobTrigger(
        "ticket", "tests.testapp.tasks.ticket_changed", on=["insert"], tenant_id="status"
    )
    assert "tenant_id='status'" in MigrationWriter.serialize(operation)[0]  # makemigrations writes it
    install(operation)
    Ticket.objects.bulk_create([Ticket(title="a", status="acme"), Ticket(title="b", status="")])
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO testapp_ticket (title, status, amount, notes) VALUES ('c', 'globex', 0, '{}')"
        )
    assert tenants(Job.objects.filter(task_name=tasks.ticket_changed.name)) == ["acme", None, "globex"]


def test_a_job_trigger_casts_a_non_text_tenant_column_to_text():
    install(
        InstallJobTrigger(
            "product", "tests.testapp.tasks.product_added", on=["insert"], tenant_id="stock", name="by_stock"
        )
    )
    Product.objects.create(sku="S", name="s", price=1, stock=42)
    # The test app's product_added trigger passes no tenant column: the argument list of triggers
    # installed before tenants, which the replaced function still reads as before.
    assert sorted(tenants(Job.objects.filter(task_name=tasks.product_added.name)), key=str) == ["42", None]


@pytest.mark.parametrize(
    "tenant_id, message",
    [
        ("", "tenant_id must name a field"),
        (42, "tenant_id must name a field"),
        ("nope", "has no field 'nope'"),
    ],
)
def test_a_job_trigger_with_a_bad_tenant_column_is_refused(tenant_id, message):
    with pytest.raises(TriggerConfigError, match=message):
        install(InstallJobTrigger("ticket", "tests.testapp.tasks.ticket_changed", tenant_id=tenant_id))


# ------------------------------------------------------------------------------- supaqueue_add_job


@pytest.fixture
def sql() -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url(), autocommit=True) as conn:
        yield conn


@pytest.mark.django_db(transaction=True)
def test_supaqueue_add_job_from_plain_psycopg_carries_the_tenant(sql):
    (job_id,) = sql.execute("SELECT (supaqueue_add_job('app.tasks.send', tenant_id => 'acme')).id").fetchone()
    assert Job.objects.get(pk=job_id).tenant_id == "acme"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("bad", ["", "t" * 300])
def test_supaqueue_add_job_refuses_a_bad_tenant(sql, bad):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"^tenant_id must be a non-empty string"):
        sql.execute("SELECT supaqueue_add_job('app.tasks.send', tenant_id => %s)", [bad])
    assert not Job.objects.exists()

"""Jobs from model changes through Django's signals: real saves and deletes in real transactions."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core import serializers
from django.db import transaction

from django_supaqueue import task
from django_supaqueue import tasks as registry
from django_supaqueue.change_jobs import enqueue_on_delete, enqueue_on_save, on_save, registrations
from django_supaqueue.exceptions import InvalidPayload, TriggerConfigError
from django_supaqueue.models import Job
from django_supaqueue.testing import assert_enqueued, assert_not_enqueued
from tests.factories import ArticleFactory, TicketFactory
from tests.testapp import tasks
from tests.testapp.models import Article, Execution, Ticket

pytestmark = pytest.mark.django_db


@pytest.fixture
def connect():
    """Connect model-change jobs for one test; they are disconnected after it."""
    made = []

    def connect(register, *args, **kwargs):
        registration = register(*args, **kwargs)
        made.append(registration)
        return registration

    yield connect
    for registration in made:
        registration.disconnect()


def test_creating_a_row_enqueues_its_id_once(connect):
    connect(enqueue_on_save, Ticket, tasks.ticket_changed, on="create")
    ticket = TicketFactory()
    ticket.title = "renamed"
    ticket.save()
    assert_enqueued(tasks.ticket_changed, {"id": ticket.pk}, count=1)


def test_on_update_ignores_creation_and_fires_on_each_update(connect):
    connect(enqueue_on_save, Ticket, tasks.ticket_changed, on="update")
    ticket = TicketFactory()
    assert_not_enqueued(tasks.ticket_changed)
    ticket.save()
    ticket.save()
    assert_enqueued(tasks.ticket_changed, {"id": ticket.pk}, count=2)


def test_both_is_the_default(connect):
    connect(enqueue_on_save, Ticket, "tests.testapp.tasks.ticket_changed")
    ticket = TicketFactory()
    ticket.save()
    assert_enqueued(tasks.ticket_changed, {"id": ticket.pk}, count=2)


def test_a_list_of_fields_becomes_keyword_arguments_with_foreign_keys_as_ids(connect):
    connect(enqueue_on_save, Ticket, tasks.ticket_fields, payload=["title", "status", "amount", "parent"])
    parent = TicketFactory()
    TicketFactory(title="child", status="waiting", amount=Decimal("3.10"), parent=parent)
    assert_enqueued(
        tasks.ticket_fields, {"title": "child", "status": "waiting", "amount": "3.10", "parent": parent.pk}
    )


def test_the_whole_row_is_serialised_with_djangos_encoder_by_column(connect):
    connect(enqueue_on_save, Ticket, tasks.ticket_row, payload="row", on="create")
    opened = datetime(2024, 5, 17, 9, 30, 15, 250000, tzinfo=UTC)
    ticket = TicketFactory(title="row", amount=Decimal("7.00"), opened_at=opened, notes={"tags": ["a"]})
    (job,) = assert_enqueued(tasks.ticket_row)
    assert job.payload == {
        "row": {
            "id": ticket.pk,
            "title": "row",
            "status": "open",
            "amount": "7.00",
            "opened_at": "2024-05-17T09:30:15.250Z",
            "parent_id": None,
            "notes": {"tags": ["a"]},
        }
    }


def test_changed_fires_only_when_a_watched_field_gets_a_new_value(connect):
    connect(enqueue_on_save, Ticket, tasks.ticket_changed, on="update", changed=["status"])
    ticket = TicketFactory()
    ticket.title = "only the title"
    ticket.save()
    assert_not_enqueued(tasks.ticket_changed)
    ticket.status = "closed"
    ticket.save()
    ticket.save()  # nothing changed since the last save
    assert_enqueued(tasks.ticket_changed, {"id": ticket.pk}, count=1)


def test_changed_compares_with_the_values_loaded_from_the_database(connect):
    connect(enqueue_on_save, Ticket, tasks.ticket_changed, on="update", changed=["status", "notes"])
    created = TicketFactory(notes={"n": 1})
    loaded = Ticket.objects.get(pk=created.pk)
    loaded.save()
    assert_not_enqueued(tasks.ticket_changed)
    loaded.notes["n"] = 2  # mutated in place: the loaded copy is kept apart
    loaded.save()
    assert_enqueued(tasks.ticket_changed, count=1)


def test_changed_ignores_fields_that_update_fields_left_out(connect):
    connect(enqueue_on_save, Ticket, tasks.ticket_changed, on="update", changed=["status"])
    ticket = TicketFactory()
    ticket.status = "closed"
    ticket.title = "new"
    ticket.save(update_fields=["title"])
    assert_not_enqueued(tasks.ticket_changed)
    ticket.save(update_fields=["status"])
    assert_enqueued(tasks.ticket_changed, count=1)


def test_a_deferred_field_that_was_never_loaded_did_not_change(connect):
    connect(enqueue_on_save, Ticket, tasks.ticket_changed, on="update", changed=["status"])
    ticket = TicketFactory()
    partial = Ticket.objects.only("title").get(pk=ticket.pk)
    partial.title = "renamed"
    partial.save()
    assert_not_enqueued(tasks.ticket_changed)


def test_a_condition_decides_per_instance(connect):
    connect(enqueue_on_save, Ticket, tasks.ticket_changed, condition=lambda t: t.amount > 100)
    TicketFactory(amount=Decimal("5"))
    big = TicketFactory(amount=Decimal("500"))
    assert_enqueued(tasks.ticket_changed, {"id": big.pk}, count=1)
    assert Job.objects.count() == 1


def test_queue_and_priority_options_reach_the_job(connect):
    connect(enqueue_on_save, Ticket, tasks.ticket_changed, queue="tickets", priority=7)
    ticket = TicketFactory()
    (job,) = assert_enqueued(tasks.ticket_changed, {"id": ticket.pk}, queue="tickets")
    assert job.priority == 7


def test_deleting_an_instance_or_a_queryset_enqueues_the_deleted_rows(connect):
    connect(enqueue_on_delete, Ticket, tasks.ticket_row, payload="row")
    first, second, third = TicketFactory.create_batch(3)
    first_id = first.pk
    first.delete()
    Ticket.objects.filter(pk__in=[second.pk, third.pk]).delete()
    jobs = assert_enqueued(tasks.ticket_row, count=3)
    assert sorted(j.payload["row"]["id"] for j in jobs) == sorted([first_id, second.pk, third.pk])
    assert jobs[0].payload["row"]["title"] == first.title


def test_a_rolled_back_save_leaves_no_job(connect):
    connect(enqueue_on_save, Ticket, tasks.ticket_changed)
    with pytest.raises(RuntimeError), transaction.atomic():
        TicketFactory(title="rolled back")
        assert_enqueued(tasks.ticket_changed, count=1)
        raise RuntimeError("the request failed")
    assert not Ticket.objects.exists()
    assert_not_enqueued(tasks.ticket_changed)


def test_a_job_that_cannot_be_enqueued_fails_the_save_in_its_transaction(connect):
    connect(enqueue_on_save, Ticket, tasks.add)  # add(a, b) cannot take id=
    with pytest.raises(InvalidPayload, match="Arguments do not fit"), transaction.atomic():
        TicketFactory(title="no job, no row")
    assert not Ticket.objects.exists() and not Job.objects.exists()


def test_signals_do_not_fire_for_update_bulk_create_or_raw_sql(connect):
    connect(enqueue_on_save, Ticket, tasks.ticket_changed)
    Ticket.objects.bulk_create([Ticket(title="bulk")])
    Ticket.objects.update(status="closed")
    assert_not_enqueued(tasks.ticket_changed)


def test_fixtures_loaded_with_loaddata_enqueue_nothing(connect):
    connect(enqueue_on_save, Ticket, tasks.ticket_changed)
    data = '[{"model": "testapp.ticket", "pk": 9001, "fields": {"title": "fixture", "notes": {}}}]'
    for obj in serializers.deserialize("json", data):
        obj.save()
    assert Ticket.objects.filter(pk=9001).exists()
    assert_not_enqueued(tasks.ticket_changed)


def test_the_decorator_form_connects_the_decorated_task(monkeypatch):
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))  # this test's task goes with it

    @enqueue_on_save(Ticket, on="create", payload=["title"])
    @task(name="tests.test_signals.title_seen")
    def title_seen(title):
        return title

    try:
        TicketFactory(title="decorated")
        assert_enqueued(title_seen, {"title": "decorated"}, count=1)
    finally:
        for registration in registrations():
            if registration.job.task == "tests.test_signals.title_seen":
                registration.disconnect()


def test_disconnect_stops_a_job(connect):
    registration = connect(enqueue_on_save, Ticket, tasks.ticket_changed)
    registration.disconnect()
    TicketFactory()
    assert_not_enqueued(tasks.ticket_changed)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"on": "always"}, 'on must be "create", "update" or "both"'),
        ({"payload": "pk"}, 'payload must be "id", "row" or a list of field names'),
        ({"condition": "yes"}, "condition must be a callable"),
    ],
)
def test_a_declaration_that_cannot_work_is_refused_at_once(options, message):
    with pytest.raises(TriggerConfigError, match=message):
        on_save(tasks.ticket_changed, **options)


def test_the_mixin_enqueues_on_create_and_when_a_watched_field_changes():
    article = ArticleFactory(title="Draft")
    article.save()  # unchanged: no job
    article.published = True
    article.save()
    assert_enqueued(tasks.index_article, {"id": article.pk}, count=2)


def test_the_mixin_enqueues_the_deleted_row():
    article = ArticleFactory(title="Gone")
    article_id = article.pk
    article.delete()
    assert_enqueued(tasks.forget_article, {"row": {"id": article_id, "title": "Gone", "published": False}})


@pytest.mark.django_db(transaction=True)
def test_the_mixin_saves_in_a_transaction_even_when_the_caller_opened_none(monkeypatch):
    def refuse(*args, **kwargs):
        raise ConnectionError("queue unavailable")

    monkeypatch.setattr("django_supaqueue.queue.enqueue_job", refuse)
    with pytest.raises(ConnectionError):
        Article.objects.create(title="never saved")
    assert not Article.objects.exists()


def test_a_worker_runs_the_job_a_save_enqueued(supaqueue):
    article = ArticleFactory()
    (job,) = supaqueue.run_pending()
    assert job.status == Job.Status.SUCCESSFUL and job.result == {"indexed": article.pk}
    assert Execution.objects.filter(label="index_article", n=article.pk).exists()

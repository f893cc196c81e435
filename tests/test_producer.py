"""Every way of making a job goes through one door: job_enqueued once per job, and the enqueued counter.

Each test makes jobs through one door and checks the two things the door owes
every job it writes: one ``job_enqueued`` (with that job's id) and one count in
``supaqueue_jobs_enqueued_total`` under the job's queue and task.
"""

import importlib
import json
from collections import Counter
from datetime import UTC, datetime

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from django_supaqueue import Pipeline, enqueue, enqueue_http, enqueue_many, metrics, scheduling, signals
from django_supaqueue.change_jobs import enqueue_on_delete, enqueue_on_save
from django_supaqueue.models import Job, Queue, Schedule
from django_supaqueue.signals import job_enqueued
from tests.factories import ArticleFactory, TicketFactory
from tests.testapp import tasks
from tests.testapp.models import Ticket

pytestmark = pytest.mark.django_db

NOOP = "tests.testapp.tasks.noop"
TOKEN = "producer-token-for-tests"


@pytest.fixture
def announced():
    """The job ids ``job_enqueued`` was sent for, in the order it was sent."""
    seen: list[int] = []

    def receiver(sender, job_id, **kwargs):
        seen.append(job_id)

    job_enqueued.connect(receiver, weak=False)
    yield seen
    job_enqueued.disconnect(receiver)


@pytest.fixture
def counted():
    """Call it to get what ``supaqueue_jobs_enqueued_total`` gained since the test began, by (queue, task)."""
    metrics.install()

    def totals() -> Counter:
        found: Counter = Counter()
        for family in text_string_to_metric_families(generate_latest(metrics.REGISTRY).decode()):
            for s in family.samples:
                if s.name == "supaqueue_jobs_enqueued_total":
                    found[(s.labels["queue"], s.labels["task"])] = s.value
        return found

    before = totals()

    def gained() -> Counter:
        now = totals()
        return Counter({k: now[k] - before[k] for k in now if now[k] != before[k]})

    return gained


@pytest.fixture
def connect():
    """Connect model-change jobs for one test; they are disconnected after it."""
    made = []

    def connect(register, *args, **kwargs):
        made.append(register(*args, **kwargs))

    yield connect
    for registration in made:
        registration.disconnect()


@pytest.fixture
def hooks():
    return Queue.objects.create(name="hooks", http_url="http://127.0.0.1:9/fn")


# -- the Python API -------------------------------------------------------------


def test_task_enqueue_announces_its_job(announced, counted):
    job = tasks.noop.enqueue()
    assert announced == [job.pk]
    assert counted() == {("default", NOOP): 1}


def test_enqueue_by_name_announces_its_job(announced, counted):
    job = enqueue(NOOP, {"i": 1})
    assert announced == [job.pk]
    assert counted() == {("default", NOOP): 1}


def test_task_enqueue_many_announces_each_job(announced, counted):
    jobs = tasks.noop.enqueue_many([{"i": i} for i in range(3)])
    assert announced == [j.pk for j in jobs] and len(set(announced)) == 3
    assert counted() == {("default", NOOP): 3}


def test_enqueue_many_by_name_announces_each_job(announced, counted):
    jobs = enqueue_many(NOOP, [{"i": 1}, {"i": 2}], queue="bulk")
    assert announced == [j.pk for j in jobs]
    assert counted() == {("bulk", NOOP): 2}


def test_enqueue_http_announces_its_call(announced, counted, hooks):
    job = enqueue_http("hooks", {"order": 1})
    assert announced == [job.pk]
    assert counted() == {("hooks", ""): 1}


def test_a_pipeline_announces_every_step(announced, counted, hooks):
    p = Pipeline()
    p.chain(p.add(tasks.noop, i=1), p.add(tasks.noop, i=2), p.add_http("hooks", {"done": True}))
    jobs = p.enqueue()
    assert announced == [j.pk for j in jobs]
    assert counted() == {("default", NOOP): 2, ("hooks", ""): 1}


# -- schedules ------------------------------------------------------------------


def due_schedule(**fields) -> Schedule:
    schedule = Schedule(name=f"every-minute-{Schedule.objects.count()}", cron="* * * * *", **fields)
    schedule.save()
    Schedule.objects.filter(pk=schedule.pk).update(next_run_at=datetime(2026, 1, 1, tzinfo=UTC))
    return schedule


def test_a_schedule_announces_the_job_of_each_tick(announced, counted, hooks):
    due_schedule(task_name=NOOP)
    due_schedule(queue="hooks", http_path="tick")
    fired = scheduling.fire_due(now=datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC))
    assert sorted(announced) == sorted(t.job_id for t in fired) and len(announced) == 2
    assert counted() == {("default", NOOP): 1, ("hooks", ""): 1}


def test_running_a_schedule_now_announces_its_job(announced, counted):
    tick = scheduling.run_now(due_schedule(task_name=NOOP))
    assert announced == [tick.job_id]
    assert counted() == {("default", NOOP): 1}


# -- the job API ----------------------------------------------------------------


@pytest.fixture
def api(client, settings):
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "API_TOKEN": TOKEN}

    def post(body):
        response = client.post(
            "/queue/jobs", json.dumps(body), content_type="application/json", HTTP_X_SUPAQUEUE_TOKEN=TOKEN
        )
        assert response.status_code == 201, response.content
        return response.json()["id"]

    return post


def test_the_job_api_announces_a_task_job(api, announced, counted):
    job_id = api({"task": "tests.testapp.tasks.add", "args": [1, 2]})
    assert announced == [job_id]
    assert counted() == {("default", "tests.testapp.tasks.add"): 1}


def test_the_job_api_announces_an_http_job(api, announced, counted, hooks):
    job_id = api({"queue": "hooks", "payload": {"x": 1}, "path": "a/b"})
    assert announced == [job_id]
    assert counted() == {("hooks", ""): 1}


# -- the Django Tasks backend ------------------------------------------------------


@pytest.mark.django6
def test_the_django_tasks_backend_announces_its_job(announced, counted):
    dt = importlib.import_module("tests.testapp.django_tasks")
    result = dt.multiply.enqueue(6, 7)
    assert announced == [int(result.id)]
    assert counted() == {("default", "tests.testapp.django_tasks.multiply"): 1}


# -- model-change jobs ------------------------------------------------------------


def test_a_save_job_announces_its_job(connect, announced, counted):
    connect(enqueue_on_save, Ticket, tasks.ticket_changed, on="create")
    TicketFactory()
    assert announced == [Job.objects.get(task_name="tests.testapp.tasks.ticket_changed").pk]
    assert counted() == {("default", "tests.testapp.tasks.ticket_changed"): 1}


def test_a_delete_job_announces_its_job(connect, announced, counted):
    ticket = TicketFactory()
    connect(enqueue_on_delete, Ticket, tasks.ticket_row, payload="row")
    ticket.delete()
    assert announced == [Job.objects.get(task_name="tests.testapp.tasks.ticket_row").pk]
    assert counted() == {("default", "tests.testapp.tasks.ticket_row"): 1}


def test_a_model_change_call_to_an_http_queue_announces_its_job(connect, announced, counted, hooks):
    connect(enqueue_on_save, Ticket, on="create", payload=["title"], http_queue="hooks")
    TicketFactory()
    assert announced == [Job.objects.get(queue=hooks).pk]
    assert counted() == {("hooks", ""): 1}


def test_jobs_declared_on_a_model_announce_their_jobs(announced, counted):
    ArticleFactory()
    assert announced == [Job.objects.get(task_name="tests.testapp.tasks.index_article").pk]
    assert counted() == {("default", "tests.testapp.tasks.index_article"): 1}


# -- names ------------------------------------------------------------------------


def test_the_life_cycle_signals_are_importable_from_lifecycle_too():
    from django_supaqueue import lifecycle

    for name in signals.__all__:
        assert getattr(lifecycle, name) is getattr(signals, name)

"""Prometheus metrics: values after a known workload, two worker processes, and access control."""

import os
import urllib.request
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.test import override_settings
from django.urls import path
from prometheus_client.parser import text_string_to_metric_families

from django_supaqueue import metrics
from django_supaqueue.models import Job, Worker
from tests.helpers import wait_for
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)

urlpatterns = [path("metrics/", metrics.metrics_view)]


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found, name, **labels):
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


@override_settings(ROOT_URLCONF=__name__)
def test_metrics_after_a_known_workload(drain, client):
    metrics.install()
    before = samples(metrics.exposition()[0].decode())
    tasks.add.enqueue_many([{"a": 1, "b": 2}] * 3)
    tasks.flaky.enqueue(n=7, failures=1)
    tasks.always_fails.enqueue()
    tasks.noop.using(run_at=timedelta(hours=1)).enqueue()
    drain()
    client.force_login(User.objects.create_superuser("root", "r@example.com", "pw"))
    response = client.get("/metrics/")
    assert response.status_code == 200
    found = samples(response.content.decode())

    def delta(name, **labels):
        return value(found, name, **labels) - value(before, name, **labels)

    add = {"queue": "default", "task": "tests.testapp.tasks.add"}
    assert delta("supaqueue_jobs_succeeded_total", **add) == 3
    assert delta("supaqueue_jobs_started_total", **add) == 3
    assert delta("supaqueue_jobs_retried_total", queue="default", task="tests.testapp.tasks.flaky") == 1
    fails = {"queue": "default", "task": "tests.testapp.tasks.always_fails"}
    assert delta("supaqueue_jobs_failed_total", **fails) == 1
    assert delta("supaqueue_attempts_failed_total", **fails) == 2
    assert delta("supaqueue_job_duration_seconds_count", **add) == 3
    assert delta("supaqueue_job_wait_seconds_count", queue="default") == 3 + 2 + 2
    assert value(found, "supaqueue_queue_depth", queue="default", status="pending") == 1
    assert value(found, "supaqueue_workers_alive") == 0


@override_settings(ROOT_URLCONF=__name__)
def test_rate_limit_room_gauge(admin_user, client):
    from django.utils import timezone

    from django_supaqueue.models import Queue, QueueCall

    limited = Queue.objects.create(name="api", rate_limit=5, rate_period=60)
    QueueCall.objects.bulk_create([QueueCall(queue=limited, at=timezone.now()) for _ in range(3)])
    Queue.objects.create(name="free")
    client.force_login(admin_user)
    found = samples(client.get("/metrics/").content.decode())
    assert value(found, "supaqueue_queue_rate_limit_room", queue="api") == 2
    assert ("supaqueue_queue_rate_limit_room", (("queue", "free"),)) not in found


@override_settings(ROOT_URLCONF=__name__, SUPAQUEUE={"METRICS_TOKEN": "s3cret-token"})
def test_metrics_view_needs_a_token_or_the_view_job_permission(client):
    assert client.get("/metrics/").status_code == 403
    assert client.get("/metrics/", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics/", HTTP_AUTHORIZATION="Bearer s3cret-token").status_code == 200
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get("/metrics/").status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_job"))
    assert client.get("/metrics/").status_code == 200


def scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return samples(response.read().decode())


def test_two_worker_processes_each_serve_their_own_counts(worker_processes):
    n = 200
    tasks.noop.enqueue_many([{"i": i} for i in range(n)])
    base = 19400 + (os.getpid() % 200)
    worker_processes.start("-p", "2", "-c", "2", "--metrics-port", str(base))
    wait_for(lambda: Job.objects.filter(status=Job.Status.SUCCESSFUL).count() == n, 60)
    wait_for(lambda: Worker.objects.count() == 2, 10)
    labels = {"queue": "default", "task": "tests.testapp.tasks.noop"}
    per_process = [value(scrape(base + i), "supaqueue_jobs_succeeded_total", **labels) for i in range(2)]
    assert sum(per_process) == n  # summing the targets gives the true total, never double
    assert value(scrape(base), "supaqueue_workers_alive") == 2


def test_counting_enqueues_costs_no_query_per_job():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    metrics.install()
    tasks.noop.enqueue()  # the queue exists and its name is cached
    with CaptureQueriesContext(connection) as ctx:
        tasks.noop.enqueue_many([{"i": i} for i in range(50)])
    assert len(ctx.captured_queries) <= 4

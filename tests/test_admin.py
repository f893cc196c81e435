"""The admin's other screens: every page renders, queues, workers and the live dashboard."""

from datetime import timedelta

import psycopg
import pytest
from django.urls import reverse
from django.utils import timezone

from django_supaqueue import queue, stats
from django_supaqueue.models import Queue
from tests.factories import CurrentJobFactory, JobEventFactory, JobFactory, QueueFactory, WorkerFactory
from tests.helpers import QUEUE_FORM_DEFAULTS, database_url

pytestmark = pytest.mark.django_db

DASHBOARD = reverse("admin:supaqueue_dashboard_changelist")
DASHBOARD_DATA = reverse("admin:supaqueue_dashboard_data")
QUEUES = reverse("admin:supaqueue_queue_changelist")
WORKERS = reverse("admin:supaqueue_worker_changelist")


def test_every_screen_renders(admin_client):
    event = JobEventFactory(kind="retried", error_class="ValueError", traceback="Traceback ...")
    lease = CurrentJobFactory()
    for name, obj in (
        ("job", event.job),
        ("queue", event.job.queue),
        ("worker", lease.worker),
        ("currentjob", lease),
    ):
        assert admin_client.get(reverse(f"admin:supaqueue_{name}_changelist")).status_code == 200
        assert admin_client.get(reverse(f"admin:supaqueue_{name}_change", args=[obj.pk])).status_code == 200
    for url in (reverse("admin:index"), reverse("admin:supaqueue_queue_add"), DASHBOARD, DASHBOARD_DATA):
        assert admin_client.get(url).status_code == 200


def test_the_queue_list_counts_jobs_per_status_and_shows_the_longest_wait(admin_client):
    emails = QueueFactory(name="emails")
    JobFactory.create_batch(2, queue=emails, run_at=timezone.now() - timedelta(minutes=5))
    JobFactory(queue=emails, status="failed")
    response = admin_client.get(QUEUES)
    row = next(q for q in response.context["cl"].result_list if q.name == "emails")
    assert row.status_counts["pending"] == stats.Count(2, True)
    assert row.status_counts["failed"] == stats.Count(1, True)
    assert row.status_counts["successful"] == stats.Count(0, True)
    page = response.content.decode()
    assert f"?queue__id__exact={emails.pk}&amp;status__exact=failed" in page and "5 min" in page


def test_counts_past_the_limit_are_estimates(admin_client, monkeypatch):
    monkeypatch.setattr(stats, "EXACT_COUNT_LIMIT", 2)
    monkeypatch.setattr(stats.status_counts, "__defaults__", (2,))
    JobFactory.create_batch(4, queue=QueueFactory(name="busy"))
    response = admin_client.get(QUEUES)
    count = next(q for q in response.context["cl"].result_list if q.name == "busy").status_counts["pending"]
    assert not count.exact and count.value >= 3 and str(count).startswith("≈")


def test_a_paused_queue_never_runs_jobs_and_resume_wakes_its_workers(admin_client, transactional_db):
    q = QueueFactory(name="reports")
    listener = psycopg.connect(database_url(), autocommit=True)
    listener.execute(f"LISTEN {queue.CHANNEL}")
    try:
        admin_client.post(QUEUES, {"action": "pause", "index": 0, "_selected_action": [q.pk]})
        q.refresh_from_db()
        assert q.paused
        admin_client.post(QUEUES, {"action": "resume", "index": 0, "_selected_action": [q.pk]})
        q.refresh_from_db()
        assert not q.paused
        assert {n.payload for n in listener.notifies(timeout=2, stop_after=1)} == {"reports 0"}
    finally:
        listener.close()


def test_saving_a_queue_in_its_form_wakes_its_workers(admin_client, transactional_db):
    q = QueueFactory(name="capped", paused=True, concurrency_limit=1)
    listener = psycopg.connect(database_url(), autocommit=True)
    listener.execute(f"LISTEN {queue.CHANNEL}")
    try:
        response = admin_client.post(
            reverse("admin:supaqueue_queue_change", args=[q.pk]),
            {**QUEUE_FORM_DEFAULTS, "concurrency_limit": "4"},
        )
        assert response.status_code == 302
        q.refresh_from_db()
        assert not q.paused and q.concurrency_limit == 4 and q.name == "capped"
        assert {n.payload for n in listener.notifies(timeout=2, stop_after=1)} == {"capped 0"}
    finally:
        listener.close()


def test_the_queue_form_edits_the_rate_limit_and_makes_an_http_queue(admin_client):
    q = QueueFactory(name="hooks")
    response = admin_client.post(
        reverse("admin:supaqueue_queue_change", args=[q.pk]),
        {
            **QUEUE_FORM_DEFAULTS,
            "rate_limit": "5",
            "rate_period": "2",
            "http_url": "https://example.com/hooks/",
        },
    )
    assert response.status_code == 302
    q.refresh_from_db()
    assert (q.rate_limit, q.rate_period, q.http_url) == (5, 2.0, "https://example.com/hooks/")
    page = admin_client.get(reverse("admin:supaqueue_queue_change", args=[q.pk])).content.decode()
    assert 'name="rate_limit"' in page and 'name="http_url"' in page


def test_a_queues_name_cannot_be_changed_once_it_exists(admin_client):
    q = QueueFactory(name="fixed")
    admin_client.post(
        reverse("admin:supaqueue_queue_change", args=[q.pk]), {**QUEUE_FORM_DEFAULTS, "name": "renamed"}
    )
    assert Queue.objects.filter(name="fixed").exists() and not Queue.objects.filter(name="renamed").exists()


def test_workers_show_heartbeat_what_they_run_and_stale_ones(admin_client, settings):
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "LEASE_DURATION": 30}
    busy = CurrentJobFactory(worker=WorkerFactory(name="web-1:10:aaa")).worker
    stale = WorkerFactory(name="web-2:11:bbb", last_heartbeat_at=timezone.now() - timedelta(minutes=2))
    page = admin_client.get(WORKERS).content.decode()
    assert 'class="sq-badge sq-alive">Alive<' in page and 'class="sq-badge sq-stale">Stale<' in page
    lease = busy.current_jobs.get()
    assert reverse("admin:supaqueue_job_change", args=[lease.job_id]) in page
    assert stale.name in page and "2 min" in page


def test_workers_and_leases_are_read_only(admin_client):
    worker = CurrentJobFactory().worker
    assert admin_client.get(reverse("admin:supaqueue_worker_delete", args=[worker.pk])).status_code == 403
    assert admin_client.get(reverse("admin:supaqueue_worker_add")).status_code == 403


def test_the_admin_index_links_the_dashboard(admin_client):
    assert DASHBOARD in admin_client.get(reverse("admin:index")).content.decode()


def test_the_dashboard_shows_queues_throughput_latency_and_failures(admin_client):
    emails = QueueFactory(name="emails")
    JobFactory(queue=emails, run_at=timezone.now() - timedelta(minutes=3))
    JobEventFactory(kind="succeeded")
    JobEventFactory(kind="retried", error_class="SMTPError", error_message="mail server said no")
    WorkerFactory()
    response = admin_client.get(DASHBOARD)
    page = response.content.decode()
    assert "emails" in page and "3\xa0minutes" in page
    assert '<svg class="sq-chart"' in page and "1 attempts succeeded, 1 failed" in page
    assert "SMTPError" in page and "mail server said no" in page
    assert "dashboard.js" in page and DASHBOARD_DATA in page


def test_the_dashboard_data_is_json_with_the_panels_rendered_again(admin_client):
    q = QueueFactory(name="emails")
    JobFactory(queue=q, status="failed")
    JobEventFactory(kind="failed", error_class="KeyError")
    data = admin_client.get(DASHBOARD_DATA).json()
    queues = {row["name"]: row for row in data["queues"]}
    assert queues["emails"]["counts"]["failed"] == {"value": 1, "exact": True}
    assert len(data["throughput"]) == 60 and data["throughput"][-1]["failed"] == 1
    assert data["failures"][0]["error_class"] == "KeyError" and data["failures"][0]["count"] == 1
    assert data["workers"] == {"alive": 0, "stale": 0}
    assert "sq-chart" in data["html"] and "KeyError" in data["html"]

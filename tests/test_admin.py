"""The admin's other screens: every page renders, queues, schedules, workers and the live dashboard."""

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from django.urls import reverse
from django.utils import timezone

import django_supaqueue
from django_supaqueue import queue, stats
from django_supaqueue.admin import chart, dashboard, schedules
from django_supaqueue.admin.display import local_time
from django_supaqueue.models import Job, JobEvent, Queue, Schedule
from tests.factories import (
    CurrentJobFactory,
    JobEventFactory,
    JobFactory,
    QueueFactory,
    ScheduleFactory,
    ScheduleTickFactory,
    WorkerFactory,
)
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


def test_the_counts_per_status_take_held_jobs_and_running_jobs_from_their_own_indexes():
    """Pending and running jobs are in no (queue, status) index: stats._COUNTED says where they are."""
    emails = QueueFactory(name="emails")
    JobFactory.create_batch(3, queue=emails)
    JobFactory.create_batch(2, queue=emails, enabled=False)
    JobFactory.create_batch(4, queue=emails, status="in_progress", attempts=1)
    JobFactory.create_batch(5, queue=emails, status="successful", attempts=1)
    JobFactory(queue=QueueFactory(name="other"), enabled=False)
    counts = stats.status_counts([emails.pk])[emails.pk]
    assert counts["pending"] == stats.Count(5, True)
    assert counts["in_progress"] == stats.Count(4, True)
    assert counts["successful"] == stats.Count(5, True)
    assert counts["failed"] == counts["waiting"] == stats.Count(0, True)


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


# --------------------------------------------------------------------------- dashboard: queues, times, chart

TIME_HTML = re.compile(r'<time datetime="[^"]+">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d</time>')


def test_the_dashboard_shows_its_time_in_one_format_before_and_after_a_refresh(admin_client, settings):
    settings.TIME_ZONE = "Europe/Berlin"
    page = admin_client.get(DASHBOARD).content.decode()
    status = re.search(r'<span id="sq-dashboard-status">(.*?)</span>', page, re.S).group(1)
    assert TIME_HTML.search(status) and ("+01:00" in status or "+02:00" in status)  # Berlin's time
    data = admin_client.get(DASHBOARD_DATA).json()
    assert TIME_HTML.search(data["status_html"]) and data["status_html"].strip().startswith("Figures as of")
    # The script swaps in the server's rendering: it formats no time of its own.
    script = (Path(django_supaqueue.__file__).parent / "static/django_supaqueue/dashboard.js").read_text()
    assert "data.status_html" in script and "toLocale" not in script


def test_the_dashboard_shows_jobs_finished_per_minute_in_each_queue(admin_client):
    emails, reports = QueueFactory(name="emails"), QueueFactory(name="reports")
    for kind in ("succeeded", "succeeded", "failed", "retried", "started"):
        JobEventFactory(kind=kind, job=JobFactory(queue=emails))
    old = JobEventFactory(kind="succeeded", job=JobFactory(queue=reports))
    JobEvent.objects.filter(pk=old.pk).update(at=timezone.now() - timedelta(minutes=30))
    data = admin_client.get(DASHBOARD_DATA).json()
    rates = {
        q["name"]: q["finished_per_minute"] for q in data["queues"] if q["name"] in ("emails", "reports")
    }
    assert rates == {"emails": 3 / dashboard.QUEUE_RATE_MINUTES, "reports": 0}
    row = re.search(r"<tr>\s*<th scope=\"row\"><a[^>]*>emails</a>.*?</tr>", data["html"], re.S).group(0)
    assert '<td class="sq-num sq-rate-cell">0.6</td>' in row
    assert "Finished per minute (last 5 min)" in admin_client.get(DASHBOARD).content.decode()


def test_an_operator_pauses_and_resumes_a_queue_from_the_dashboard(admin_client, transactional_db):
    q = QueueFactory(name="reports")
    page = admin_client.get(DASHBOARD).content.decode()
    pause = reverse("admin:supaqueue_queue_pause", args=[q.pk])
    assert f'action="{pause}"' in page and 'aria-label="Pause reports"' in page
    assert "csrfmiddlewaretoken" in page
    listener = psycopg.connect(database_url(), autocommit=True)
    listener.execute(f"LISTEN {queue.CHANNEL}")
    try:
        response = admin_client.post(pause, {"next": DASHBOARD}, follow=True)
        assert response.redirect_chain[-1][0] == DASHBOARD
        assert "Paused 1 queue." in response.content.decode()
        q.refresh_from_db()
        assert q.paused
        resume = reverse("admin:supaqueue_queue_resume", args=[q.pk])
        assert f'action="{resume}"' in admin_client.get(DASHBOARD_DATA).json()["html"]
        admin_client.post(resume, {"next": DASHBOARD})
        q.refresh_from_db()
        assert not q.paused
        # Resumed through the queue list's own action: the workers are woken at once.
        assert {n.payload for n in listener.notifies(timeout=2, stop_after=1)} == {"reports 0"}
    finally:
        listener.close()


def test_pause_from_the_dashboard_needs_change_queue_and_a_post(staff_client, admin_client):
    q = QueueFactory(name="reports")
    pause = reverse("admin:supaqueue_queue_pause", args=[q.pk])
    assert admin_client.get(pause).status_code == 405
    assert admin_client.post(pause, {"next": "https://elsewhere.example/"})["Location"] == QUEUES
    q.refresh_from_db()
    assert q.paused
    Queue.objects.filter(pk=q.pk).update(paused=False)
    client = staff_client("view_dashboard", "view_queue")
    page = client.get(DASHBOARD).content.decode()
    assert pause not in page and 'aria-label="Pause reports"' not in page
    assert client.post(pause, {"next": DASHBOARD}).status_code == 403
    q.refresh_from_db()
    assert not q.paused


def test_the_failure_rate_line_breaks_at_minutes_without_attempts():
    at = datetime(2026, 1, 1, 12, tzinfo=UTC)
    minutes = [
        stats.Minute(at + timedelta(minutes=i), ok, bad)
        for i, (ok, bad) in enumerate([(1, 1), (3, 1), (0, 0), (0, 0), (2, 2), (0, 0), (1, 0), (1, 1)])
    ]
    svg = str(chart.throughput_svg(minutes))
    lines = re.findall(r'<polyline class="sq-rate" points="([^"]+)"/>', svg)
    assert [len(points.split()) for points in lines] == [2, 2]
    assert svg.count('class="sq-rate-dot"') == 1  # the rate of 12:04, between two empty minutes
    assert chart.throughput_svg(minutes[2:4]).count("sq-rate") == 0


# --------------------------------------------------------------------------- schedules

SCHEDULES = reverse("admin:supaqueue_schedule_changelist")


def test_the_schedule_list_merges_columns_to_fit_and_says_the_cron_in_words(admin_client):
    ScheduleFactory(name="nightly", cron="0 2 * * 1-5", timezone="Europe/Berlin")
    response = admin_client.get(SCHEDULES)
    assert response.context["cl"].list_display[1:] == [
        "schedule",
        "expression",
        "enabled",
        "last_run",
        "next_run",
    ]
    page = response.content.decode()
    assert "<code>0 2 * * 1-5</code> Europe/Berlin" in page
    assert "At 02:00, Monday through Friday" in page
    assert "tests.testapp.tasks.noop" in page  # the target, under the name
    assert schedules.in_words(ScheduleFactory(cron="*/5 * * * *").timing()) == "Every 5 minutes"
    nightly = Schedule.objects.get(name="nightly")
    change = admin_client.get(reverse("admin:supaqueue_schedule_change", args=[nightly.pk])).content.decode()
    assert "At 02:00, Monday through Friday (Europe/Berlin)" in change


def test_a_schedules_next_run_is_never_shown_in_the_past(admin_client):
    schedule = ScheduleFactory(name="hourly", cron="0 * * * *")
    missed = timezone.now() - timedelta(hours=3)
    Schedule.objects.filter(pk=schedule.pk).update(next_run_at=missed)
    page = admin_client.get(SCHEDULES).content.decode()
    cell = re.search(r'<td class="field-next_run">(.*?)</td>', page, re.S).group(1)
    assert "Overdue" in cell and "in " in cell
    shown = datetime.fromisoformat(re.search(r'<time datetime="([^"]+)"', cell).group(1))
    assert shown > timezone.now()
    change = admin_client.get(reverse("admin:supaqueue_schedule_change", args=[schedule.pk])).content.decode()
    assert local_time(missed) not in change and "Overdue" in change


def test_schedule_ticks_are_shown_in_local_time(admin_client, settings):
    settings.TIME_ZONE = "Europe/Berlin"
    tick = ScheduleTickFactory(tick_at=datetime(2026, 1, 1, 1, tzinfo=UTC))
    page = admin_client.get(reverse("admin:supaqueue_schedule_change", args=[tick.schedule.pk])).content
    assert '<time datetime="2026-01-01T02:00:00+01:00">2026-01-01 02:00:00</time>' in page.decode()


def test_run_now_is_a_button_on_the_schedules_page(admin_client):
    schedule = ScheduleFactory(name="hourly", cron="0 * * * *")
    before = Schedule.objects.get(pk=schedule.pk).next_run_at
    change = reverse("admin:supaqueue_schedule_change", args=[schedule.pk])
    run_now = reverse("admin:supaqueue_schedule_run_now", args=[schedule.pk])
    page = admin_client.get(change).content.decode()
    assert f'<form method="post" action="{run_now}">' in page and ">Run now</button>" in page
    assert admin_client.get(run_now).status_code == 405
    response = admin_client.post(run_now, follow=True)
    assert response.redirect_chain[-1][0] == change
    (tick,) = schedule.ticks.all()
    assert tick.manual and Job.objects.filter(pk=tick.job_id).exists()
    assert [str(m) for m in response.context["messages"]] == [f"hourly: enqueued job #{tick.job_id}."]
    assert Schedule.objects.get(pk=schedule.pk).next_run_at == before  # cadence unchanged


def test_run_now_on_the_schedules_page_needs_change_schedule(staff_client):
    schedule = ScheduleFactory(name="hourly", cron="0 * * * *")
    client = staff_client("view_schedule")
    run_now = reverse("admin:supaqueue_schedule_run_now", args=[schedule.pk])
    page = client.get(reverse("admin:supaqueue_schedule_change", args=[schedule.pk])).content.decode()
    assert run_now not in page and "Run now" not in page
    assert client.post(run_now).status_code == 403
    assert not Job.objects.exists() and not schedule.ticks.exists()

"""The job and worker screens' rough edges (issue 20): one time format to the second in the user's
time zone, the last error and duration columns, the task filter, delayed jobs, the live refresh of
the job list, and a worker's page listing the jobs it runs and ran."""

import re
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_supaqueue.models import Job
from django_supaqueue.tasks import registered_tasks
from tests.factories import CurrentJobFactory, JobEventFactory, JobFactory, WorkerFactory

pytestmark = pytest.mark.django_db

LIST = reverse("admin:supaqueue_job_changelist")
STATIC = Path(__file__).resolve().parent.parent / "django_supaqueue" / "static" / "django_supaqueue"
#: 12:34:56 UTC, which Paris shows as 13:34:56 (UTC+1 in January).
MOMENT = datetime(2030, 1, 15, 12, 34, 56, 789000, tzinfo=UTC)
PARIS = '<time datetime="2030-01-15T13:34:56.789000+01:00">2030-01-15 13:34:56</time>'


def change_url(job):
    return reverse("admin:supaqueue_job_change", args=[job.pk])


def worker_url(worker):
    return reverse("admin:supaqueue_worker_change", args=[worker.pk])


def cell(page: str, column: str, job: Job) -> str:
    """The HTML of one column's cell in a job's row of the list (Django names cells field-<name>)."""
    row = re.search(
        rf'<tr[^>]*>(?:(?!</tr>).)*?_selected_action" value="{job.pk}"(?:(?!</tr>).)*</tr>', page, re.S
    )
    assert row, f"job {job.pk} is not listed"
    found = re.search(rf'class="field-{column}"[^>]*>(.*?)</t[dh]>', row.group(0), re.S)
    assert found, f"no {column} column"
    return found.group(1)


# -- one time format, to the second, in the user's time zone ---------------------------------------


def test_the_job_list_shows_times_to_the_second_in_the_users_time_zone(admin_client):
    job = JobFactory(run_at=MOMENT)
    with timezone.override("Europe/Paris"):
        page = admin_client.get(LIST).content.decode()
    assert PARIS in cell(page, "due", job)


def test_a_jobs_page_shows_every_time_to_the_second_in_the_users_time_zone(admin_client):
    job = JobFactory(status="failed", attempts=1, run_at=MOMENT, started_at=MOMENT, finished_at=MOMENT)
    JobEventFactory(job=job, kind="retried", duration=1.0, error_class="E", retry_at=MOMENT)
    job.events.update(at=MOMENT)
    with timezone.override("Europe/Paris"):
        page = admin_client.get(change_url(job)).content.decode()
    times = page[page.index("Times") :]
    fieldsets = times[: times.index("sq-timeline")]
    assert fieldsets.count(PARIS) == 3  # run at, started at, finished at
    timeline = page[page.index("sq-timeline") :]
    assert f"<td>{PARIS}</td>" in timeline and f"next attempt at {PARIS}" in timeline
    assert "p.m." not in page and ".789" not in unescape(re.sub(r"<[^>]+>", "", timeline))


def test_a_running_jobs_lease_is_shown_to_the_second(admin_client):
    lease = CurrentJobFactory(lease_expires_at=MOMENT)
    with timezone.override("Europe/Paris"):
        page = admin_client.get(change_url(lease.job)).content.decode()
    assert f"lease until {PARIS}" in page


def test_the_worker_screens_show_times_to_the_second_in_the_users_time_zone(admin_client):
    worker = WorkerFactory(started_at=MOMENT, last_heartbeat_at=MOMENT)
    with timezone.override("Europe/Paris"):
        listing = admin_client.get(reverse("admin:supaqueue_worker_changelist")).content.decode()
        page = admin_client.get(worker_url(worker)).content.decode()
    assert PARIS in listing and " ago (" in listing
    assert page.count(PARIS) == 2  # started, last heartbeat


# -- last error and duration columns ---------------------------------------------------------------


def test_the_list_shows_the_last_error_short_with_the_full_text_in_its_title(admin_client):
    message = "the mail server said no " * 10
    text = f"shop.mail.errors.MailServerRefusedError: {message}"
    job = JobFactory(status="failed", attempts=5, last_error=text)
    fine = JobFactory(status="successful")
    page = admin_client.get(LIST).content.decode()
    error = cell(page, "error", job)
    assert "<strong>MailServerRefusedError</strong>: the mail server said no" in error
    assert f'title="{text}"' in error  # whole, in the title
    shown = re.sub(r"<[^>]+>", "", error.split(">", 1)[1])
    assert "shop.mail.errors" not in shown and len(shown) < 120 and shown.endswith("…")
    assert cell(page, "error", fine) == "–"


def test_the_list_shows_how_long_the_last_or_current_attempt_ran(admin_client):
    done = JobFactory(status="successful", attempts=1)
    JobEventFactory(job=done, kind="succeeded", duration=0.25)
    retrying = JobFactory(status="pending", attempts=1, run_at=timezone.now() + timedelta(minutes=5))
    JobEventFactory(job=retrying, kind="retried", duration=1.5, error_class="E")
    running = CurrentJobFactory().job
    Job.objects.filter(pk=running.pk).update(started_at=timezone.now() - timedelta(seconds=90))
    never = JobFactory()
    page = admin_client.get(LIST).content.decode()
    assert cell(page, "duration", done) == "250 ms"
    assert cell(page, "duration", retrying) == "1.5 s"
    assert "1 min 3" in cell(page, "duration", running) and "running" in cell(page, "duration", running)
    assert cell(page, "duration", never) == "–"


def test_the_duration_column_costs_no_query_per_row(admin_client):
    def queries_for_the_list():
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(LIST).status_code == 200
        return len(queries)

    for _ in range(2):
        JobEventFactory(kind="succeeded", duration=1.0)
    few = queries_for_the_list()
    for _ in range(8):
        JobEventFactory(kind="succeeded", duration=1.0)
    assert queries_for_the_list() == few


# -- the task filter ---------------------------------------------------------------------------------


def task_choices(page: str) -> list[tuple[str, str]]:
    """(title, text) of each link of the task filter but "All"."""
    block = re.search(r'<details data-filter-title="task".*?</details>', page, re.S).group(0)
    links = re.findall(r'<a href="[^"]*"(?: title="([^"]*)")?>([^<]*)</a>', block)
    return [(title, text) for title, text in links if text != "All"]


def test_the_task_filter_lists_each_task_once_by_its_short_name(admin_client):
    choices = task_choices(admin_client.get(LIST).content.decode())
    texts = [text for _title, text in choices]
    assert len(texts) == len(set(texts)) == len(registered_tasks())
    assert ("tests.testapp.tasks.noop", "noop") in choices
    assert not [text for text in texts if "(" in text]  # not "noop (tests.testapp.tasks.noop)"


def test_tasks_whose_short_names_collide_are_shown_by_their_full_names(admin_client):
    choices = task_choices(admin_client.get(LIST).content.decode())
    texts = [text for _title, text in choices]
    assert "tests.testapp.tasks.add" in texts and "example_project.example_app.tasks.add" in texts
    assert "add" not in texts


def test_the_task_filter_still_filters_by_the_full_name(admin_client):
    wanted = JobFactory(task_name="tests.testapp.tasks.add")
    JobFactory(task_name="example_project.example_app.tasks.add")
    response = admin_client.get(LIST, {"task": "tests.testapp.tasks.add"})
    assert [job.pk for job in response.context["cl"].result_list] == [wanted.pk]


# -- delayed jobs ------------------------------------------------------------------------------------


def test_a_delayed_job_says_when_it_runs_in_the_list_and_on_its_page(admin_client):
    delayed = JobFactory(run_at=timezone.now() + timedelta(hours=1))
    due = JobFactory()
    page = admin_client.get(LIST).content.decode()
    status = cell(page, "status_badge", delayed)
    assert ">Pending<" in status and "· in 59 min" in status
    assert "in " not in re.sub(r"<[^>]+>", "", cell(page, "status_badge", due))
    assert "· in 59 min" in admin_client.get(change_url(delayed)).content.decode()


def test_a_job_waiting_to_retry_says_when_it_retries(admin_client):
    waiting = JobFactory(attempts=1, run_at=timezone.now() + timedelta(seconds=90), last_error="E: boom")
    assert "· retry in 1 min" in cell(admin_client.get(LIST).content.decode(), "status_badge", waiting)


def test_a_held_delayed_job_says_both(admin_client):
    held = JobFactory(enabled=False, run_at=timezone.now() + timedelta(hours=2))
    status = cell(admin_client.get(LIST).content.decode(), "status_badge", held)
    assert "· in 1 h 59 min" in status and 'class="sq-badge sq-held">Held<' in status


# -- a long error class wraps in the timeline -------------------------------------------------------


def test_the_timeline_wraps_a_long_error_class(admin_client):
    job = JobFactory(status="failed", attempts=1)
    JobEventFactory(job=job, kind="failed", error_class="a." * 100 + "VeryLongError", error_message="x")
    page = admin_client.get(change_url(job)).content.decode()
    assert '<td class="sq-details">' in page and '<strong class="sq-error-class">a.a.' in page
    css = (STATIC / "admin.css").read_text()
    assert re.search(r"\.sq-timeline \.sq-details \{[^}]*overflow-wrap: anywhere", css)
    assert re.search(r"\.sq-timeline \.sq-error-class \{[^}]*overflow-wrap: anywhere", css)


# -- the live refresh of the job list ---------------------------------------------------------------


def test_the_job_list_loads_its_refresh_script_with_a_pause_button(admin_client):
    page = admin_client.get(LIST).content.decode()
    assert "django_supaqueue/joblist.js" in page
    assert re.search(r'<div id="sq-joblist" class="sq-toolbar" data-interval="\d+"', page)
    assert 'id="sq-joblist-toggle"' in page and 'aria-pressed="false"' in page
    assert '<div id="sq-joblist-results">' in page and '<div id="sq-joblist-pager">' in page
    assert (STATIC / "joblist.js").exists()


def test_the_refresh_returns_the_table_and_pager_of_the_same_filters(admin_client):
    failed = JobFactory(status="failed")
    JobFactory(status="pending")
    first = admin_client.get(LIST, {"status__exact": "failed"})
    assert "Accept" in first["Vary"] and first["Content-Type"].startswith("text/html")
    later = JobFactory(status="failed")  # appears after the page was loaded
    response = admin_client.get(LIST, {"status__exact": "failed"}, headers={"accept": "application/json"})
    assert response["Content-Type"] == "application/json" and "Accept" in response["Vary"]
    data = response.json()
    assert 'id="result_list"' in data["results"]
    assert change_url(later) in data["results"] and change_url(failed) in data["results"]
    assert data["rows"] == 2 and "2 jobs" in data["pager"] and data["selection_note"] == "0 of 2 selected"
    assert "Jobs as of <time" in data["status"] and data["generated_at"]
    assert 'sq-badge sq-pending">' not in data["results"]  # the filter held


def test_the_refresh_keeps_the_page_it_is_on(admin_client, monkeypatch):
    from django_supaqueue.admin.jobs import JobAdmin

    monkeypatch.setattr(JobAdmin, "list_per_page", 2)
    ids = [job.pk for job in JobFactory.create_batch(5)][::-1]
    data = admin_client.get(LIST, {"after": ids[1]}, headers={"accept": "application/json"}).json()
    assert [int(i) for i in re.findall(r'_selected_action" value="(\d+)"', data["results"])] == ids[2:4]
    assert 'rel="prev"' in data["pager"] and 'rel="next"' in data["pager"]


def test_the_refresh_needs_view_job_like_the_list(staff_client):
    client = staff_client("view_queue")
    assert client.get(LIST, headers={"accept": "application/json"}).status_code == 403


# -- a worker's page lists the jobs it runs ---------------------------------------------------------


def test_a_workers_page_lists_the_jobs_it_holds_with_status_and_times(admin_client):
    lease = CurrentJobFactory(job__task_name="tests.testapp.tasks.send_email", started_at=MOMENT)
    other = CurrentJobFactory()
    with timezone.override("Europe/Paris"):
        page = admin_client.get(worker_url(lease.worker)).content.decode()
    held = page[page.index("Jobs it runs now") : page.index("Jobs it ran lately")]
    assert f'<a href="{change_url(lease.job)}">#{lease.job_id}</a>' in held
    assert 'title="tests.testapp.tasks.send_email">send_email<' in held
    assert 'class="sq-badge sq-in-progress">In progress<' in held and PARIS in held
    assert change_url(other.job) not in page


def test_a_workers_page_lists_the_attempts_it_finished_lately(admin_client):
    worker = WorkerFactory(started_at=timezone.now() - timedelta(hours=1))
    ok = JobFactory(status="successful", attempts=1)
    JobEventFactory(job=ok, kind="started", worker_name=worker.name)
    JobEventFactory(job=ok, kind="succeeded", worker_name=worker.name, duration=0.5)
    failed = JobFactory(status="failed", attempts=1)
    JobEventFactory(job=failed, kind="failed", worker_name=worker.name, duration=2.0, error_class="E")
    elsewhere = JobFactory(status="successful")
    JobEventFactory(job=elsewhere, kind="succeeded", worker_name="another:1:w")
    before = JobFactory(status="successful")
    JobEventFactory(job=before, kind="succeeded", worker_name=worker.name)
    before.events.update(at=worker.started_at - timedelta(minutes=1))  # an earlier process of that name
    page = admin_client.get(worker_url(worker)).content.decode()
    recent = page[page.index("Jobs it ran lately") :]
    assert recent.index(change_url(failed)) < recent.index(change_url(ok))  # newest first
    assert 'class="sq-badge sq-successful">Successful<' in recent and "500 ms" in recent
    assert 'class="sq-badge sq-failed">Failed<' in recent and "Failed for good" in recent
    assert recent.count(change_url(ok)) == 1  # its outcome, not also its start
    assert change_url(elsewhere) not in recent and change_url(before) not in recent
    assert "None: it holds no lease." in page


def test_an_idle_workers_page_says_so(admin_client):
    page = admin_client.get(worker_url(WorkerFactory())).content.decode()
    assert "None: it holds no lease." in page and "None since it started." in page


def test_the_job_list_shows_a_priority_other_than_zero_beside_the_task(admin_client):
    urgent, plain = JobFactory(priority=5), JobFactory(priority=0)
    page = admin_client.get(LIST).content.decode()
    assert 'title="priority 5">↑5</span>' in cell(page, "task", urgent)
    assert "sq-priority" not in cell(page, "task", plain)

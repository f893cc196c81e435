"""The admin in a real browser: headless Chromium (Debian's package) driven by Playwright.

A person's path through the screens: log in, open the dashboard and watch it
refresh itself, pause a queue from it, filter the jobs, retry a failed job and
see it succeed once a worker has run, resume the queue; run a schedule now from
its page. A screenshot of every screen is saved under ``test-artifacts/admin-browser/``;
with SUPAQUEUE_DOCS_SCREENSHOTS=1 the same screens also go to ``docs/images/admin-<page>.png``
(the viewport, 1366 x 900: what the how-to shows). Skipped only where Playwright
is not installed (the ``browser`` extra); CI installs it and Chromium for both
passes (Django 6.1 and 5.2) and sets SUPAQUEUE_REQUIRE_BROWSER, under which a
missing Playwright fails instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from django_supaqueue import scheduling
from django_supaqueue.admin import dashboard
from django_supaqueue.models import Job, Schedule
from tests.browser import TIME, VIEWPORT, fits_the_window, log_in, open_page, shoot, sync_api
from tests.factories import CurrentJobFactory, ScheduleFactory, WorkerFactory
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def page(live_server, monkeypatch) -> Iterator[object]:
    yield from open_page(live_server, monkeypatch)


def test_an_operator_retries_a_failed_job_and_pauses_a_queue(page, drain, monkeypatch):
    monkeypatch.setattr(dashboard, "REFRESH_MS", 400)
    for i in range(3):
        tasks.add.enqueue(i, i)
    failing = tasks.flaky.using(max_attempts=2).enqueue(n=1, failures=2)
    drain()
    failing.refresh_from_db()
    assert failing.status == Job.Status.FAILED

    log_in(page)

    # The dashboard, reached from the admin index, refreshes itself without reloading.
    page.get_by_role("link", name="Dashboard").click()
    sync_api.expect(page.get_by_role("heading", name="Jobs per queue")).to_be_visible()
    sync_api.expect(page.get_by_role("img", name="Attempts per minute and failure rate")).to_be_visible()
    sync_api.expect(page.get_by_role("rowheader", name="RuntimeError")).to_be_visible()
    # Breadcrumbs are a bar, not a numbered list, on Django 5.2 as on 6.
    crumb = page.locator("ol.breadcrumbs li").first
    assert crumb.evaluate("li => getComputedStyle(li).display") == "inline-block"
    status = page.locator("#sq-dashboard-status")
    sync_api.expect(status).to_have_text(re.compile(rf"^Figures as of {TIME}\.$"))
    page.evaluate("window.loadedOnce = true")
    page.wait_for_function("Number(document.getElementById('sq-dashboard').dataset.refreshes) >= 2")
    assert page.evaluate("window.loadedOnce") is True  # the same document: no reload
    sync_api.expect(status).to_have_text(re.compile(rf"^Figures as of {TIME}\.$"))  # after refreshes too
    toggle = page.get_by_role("button", name="Pause auto-refresh")
    toggle.focus()
    page.keyboard.press("Enter")
    sync_api.expect(page.get_by_role("button", name="Resume auto-refresh")).to_have_attribute(
        "aria-pressed", "true"
    )
    assert fits_the_window(page)
    shoot(page, "dashboard")

    # Pause a queue from the dashboard: its jobs stay pending while workers run.
    page.get_by_role("button", name="Pause default").click()
    sync_api.expect(page.locator(".messagelist")).to_contain_text("Paused 1 queue.")
    sync_api.expect(page.get_by_role("row", name=re.compile("^default Paused"))).to_be_visible()
    sync_api.expect(page.get_by_role("button", name="Resume default")).to_be_visible()
    held_back = tasks.add.enqueue(20, 22)
    drain()
    held_back.refresh_from_db()
    assert held_back.status == Job.Status.PENDING

    # Filter the jobs to the failed ones.
    page.goto("/admin/supaqueue/job/")
    page.locator("#changelist-filter").get_by_role("link", name="Failed").click()
    sync_api.expect(page.locator("#result_list tbody tr")).to_have_count(1)
    # Every column in the window: the list's own box does not scroll sideways either.
    assert page.evaluate(
        "(e => e.scrollWidth <= e.clientWidth)(document.querySelector('#changelist .results'))"
    )
    shoot(page, "jobs")

    # Resume the queue from the queue list: the action bar says "Run" there as on the job list.
    page.goto("/admin/supaqueue/queue/")
    sync_api.expect(page.locator("#result_list")).to_contain_text("Paused")
    page.get_by_label("Select this object for an action - default").check()
    page.get_by_label("Action:").select_option("resume")
    page.get_by_role("button", name="Run").click()
    sync_api.expect(page.locator(".messagelist")).to_contain_text("Resumed 1 queue.")
    shoot(page, "queues")

    # Retry the failed job from the list, and let a worker run it (and the held-back one).
    page.goto("/admin/supaqueue/job/?status__exact=failed")
    page.get_by_label(f"Select this object for an action - {failing}").check()
    page.get_by_label("Action:").select_option("retry_now")
    page.get_by_role("button", name="Run").click()
    sync_api.expect(page.locator(".messagelist")).to_contain_text("Retried 1 job.")
    drain()
    held_back.refresh_from_db()
    assert held_back.status == Job.Status.SUCCESSFUL
    page.goto(f"/admin/supaqueue/job/{failing.pk}/change/")
    sync_api.expect(page.locator(".field-status_badge")).to_contain_text("Successful")
    timeline = page.get_by_role("table", name="Every event of this job, oldest first")
    sync_api.expect(timeline).to_contain_text("Retried by hand")
    sync_api.expect(timeline.locator("tr").last).to_contain_text("Succeeded")
    shoot(page, "job")

    # Workers: the silent one stands out (made after the drains, whose chores remove such rows).
    busy = CurrentJobFactory(worker=WorkerFactory(name="web-1:4242:a1b2c3")).worker
    WorkerFactory(name="old-host:4242:gone", last_heartbeat_at="2000-01-01T00:00:00Z")
    page.goto("/admin/supaqueue/worker/")
    sync_api.expect(page.locator("#result_list")).to_contain_text("Stale")
    shoot(page, "workers")
    page.goto(f"/admin/supaqueue/worker/{busy.pk}/change/")
    sync_api.expect(page.locator("#content")).to_contain_text("web-1:4242:a1b2c3")
    shoot(page, "worker")


def test_an_operator_runs_a_schedule_now_from_its_page(page):
    nightly = ScheduleFactory(
        name="nightly-report",
        task_name="tests.testapp.tasks.noop",
        cron="0 2 * * *",
        timezone="Europe/Berlin",
    )
    ScheduleFactory(name="sync-inventory", cron="*/15 * * * 1-5", task_name=tasks.noop.name)
    missed = ScheduleFactory(name="weekly-digest", cron="30 7 * * 1", task_name=tasks.noop.name)
    scheduling.run_now(missed)
    Schedule.objects.filter(pk=missed.pk).update(next_run_at="2000-01-03T07:30:00Z")  # after downtime
    log_in(page)

    # The list fits the window: the cron in words, the next run ahead even after downtime.
    page.goto("/admin/supaqueue/schedule/")
    sync_api.expect(page.locator("#result_list")).to_contain_text("At 02:00")
    sync_api.expect(page.locator("#result_list")).to_contain_text("Overdue")
    assert fits_the_window(page)
    header = page.locator("#result_list thead th").last.bounding_box()
    assert header["x"] + header["width"] <= VIEWPORT["width"]
    shoot(page, "schedules")

    # Run now from the schedule's own page: one job, a message saying which.
    page.get_by_role("link", name="nightly-report").click()
    page.get_by_role("button", name="Run now").click()
    sync_api.expect(page.locator(".messagelist")).to_contain_text("enqueued job #")
    (tick,) = nightly.ticks.all()
    assert tick.manual and Job.objects.filter(pk=tick.job_id).exists()
    sync_api.expect(page.locator(".field-recent_outcomes")).to_contain_text(re.compile(TIME))
    shoot(page, "schedule")

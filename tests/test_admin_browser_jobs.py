"""The job and worker screens in a real browser (headless Chromium driven by Playwright): the job list
refreshing itself without getting in the operator's way, and a long error class wrapping in a job's
timeline. Set up as tests/test_admin_browser.py is (the same Chromium, flags and skip rule);
screenshots go to ``test-artifacts/admin-browser/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from django_supaqueue.admin import jobs
from tests.browser import fits_the_window, log_in, open_page, shoot, sync_api
from tests.factories import JobEventFactory, JobFactory

REFRESHES = "Number(document.getElementById('sq-joblist').dataset.refreshes)"

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def page(live_server, monkeypatch) -> Iterator[object]:
    yield from open_page(live_server, monkeypatch)


def test_the_job_list_refreshes_itself_but_not_under_the_operators_hands(page, monkeypatch):
    monkeypatch.setattr(jobs, "REFRESH_MS", 300)
    JobFactory(status="failed", attempts=5, last_error="shop.mail.MailServerRefusedError: " + "no " * 60)
    log_in(page)
    page.goto("/admin/supaqueue/job/")
    rows = page.locator("#result_list tbody tr")
    sync_api.expect(rows).to_have_count(1)
    page.evaluate("window.loadedOnce = true")

    # A job enqueued meanwhile shows up in place, without a reload.
    second = JobFactory()
    sync_api.expect(rows).to_have_count(2)
    assert page.evaluate("window.loadedOnce") is True
    sync_api.expect(page.locator("#sq-joblist-status")).to_have_text(
        re.compile(r"^Jobs as of \d{4}-\d\d-\d\d ")
    )
    sync_api.expect(page.locator(f'a[href$="/job/{second.pk}/change/"]')).to_be_visible()

    # Django's actions work on the swapped rows: "select all" ticks the rows now shown.
    page.locator("#action-toggle").check()
    sync_api.expect(page.locator("span.action-counter").first).to_have_text("2 of 2 selected")
    sync_api.expect(page.locator("#result_list tbody tr.selected")).to_have_count(2)

    # While jobs are ticked, the list holds still.
    held_at = page.evaluate(REFRESHES)
    JobFactory()
    page.wait_for_timeout(1200)
    assert page.evaluate(REFRESHES) == held_at
    sync_api.expect(rows).to_have_count(2)
    page.locator("#action-toggle").uncheck()
    sync_api.expect(rows).to_have_count(3)

    # One ticked row after a swap still counts, against the rows now shown.
    page.locator("#result_list tbody tr input.action-select").first.check()
    sync_api.expect(page.locator("span.action-counter").first).to_have_text("1 of 3 selected")
    page.locator("#result_list tbody tr input.action-select").first.uncheck()

    # The pause button stops it (WCAG 2.2.2).
    page.get_by_role("button", name="Pause auto-refresh").click()
    sync_api.expect(page.get_by_role("button", name="Resume auto-refresh")).to_have_attribute(
        "aria-pressed", "true"
    )
    paused_at = page.evaluate(REFRESHES)
    JobFactory()
    page.wait_for_timeout(1200)
    assert page.evaluate(REFRESHES) == paused_at
    sync_api.expect(rows).to_have_count(3)
    page.get_by_role("button", name="Resume auto-refresh").click()
    sync_api.expect(rows).to_have_count(4)
    assert fits_the_window(page)
    shoot(page, "job-list-live", docs=False)


def test_a_long_error_class_wraps_in_a_jobs_timeline(page):
    job = JobFactory(status="failed", attempts=1)
    error_class = "shop.integrations.payments.providers." * 5 + "PaymentProviderTemporarilyUnavailableError"
    JobEventFactory(job=job, kind="failed", duration=1.0, error_class=error_class, error_message="try later")
    log_in(page)
    page.goto(f"/admin/supaqueue/job/{job.pk}/change/")
    sync_api.expect(page.locator(".sq-error-class")).to_have_text(error_class)
    timeline = page.locator(".sq-timeline")
    assert timeline.evaluate("s => s.querySelector('table').scrollWidth <= s.clientWidth")
    assert fits_the_window(page)
    shoot(page, "job-timeline-long-error", docs=False)

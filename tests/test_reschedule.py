"""Rescheduling jobs not started yet from Python and from the admin: both are the SQL function's doors."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from django_supaqueue import reschedule
from django_supaqueue.exceptions import InvalidOption
from django_supaqueue.models import JobEvent
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db

JOBS = reverse("admin:supaqueue_job_changelist")


def test_reschedule_changes_jobs_not_started_and_says_how_many():
    pending, running = JobFactory(), JobFactory(status="in_progress", attempts=1)
    assert reschedule([pending, running.pk], run_at=timedelta(hours=1), priority=9, max_attempts=2) == 1
    pending.refresh_from_db()
    assert pending.priority == 9 and pending.max_attempts == 2
    assert pending.run_at > timezone.now() + timedelta(minutes=59)
    running.refresh_from_db()
    assert running.priority == 0


def test_reschedule_leaves_what_it_is_not_given():
    job = JobFactory(priority=4)
    run_at = job.run_at
    assert reschedule([job], max_attempts=9) == 1
    job.refresh_from_db()
    assert (job.run_at, job.priority, job.max_attempts) == (run_at, 4, 9)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"priority": 101}, "priority 101 is out of range"),
        ({"max_attempts": 0}, "max_attempts must be"),
        ({"run_at": "tomorrow"}, "run_at must be a datetime"),
        ({}, "reschedule needs run_at, priority or max_attempts"),
    ],
)
def test_reschedule_refuses_bad_options_before_the_database_sees_them(options, message):
    job = JobFactory()
    with pytest.raises(InvalidOption, match=message):
        reschedule([job], **options)


def test_rescheduling_no_job_changes_nothing():
    assert reschedule([], priority=1) == 0


def post(client, url, data):
    return client.post(url, data, follow=True)


def test_the_admin_action_asks_for_the_new_values_first(admin_client):
    job = JobFactory()
    response = post(admin_client, JOBS, {"action": "reschedule", "_selected_action": [job.pk]})
    page = response.content.decode()
    assert "Reschedule the selected job?" in page and 'name="run_at"' in page and 'name="priority"' in page
    job.refresh_from_db()
    assert job.priority == 0


def test_the_admin_action_reschedules_the_jobs_not_started(admin_client):
    pending, done = JobFactory(), JobFactory(status="successful", attempts=1)
    data = {
        "action": "reschedule",
        "post": "yes",
        "_selected_action": [pending.pk, done.pk],
        "run_at": "2031-05-04T03:02:01",
        "priority": "-7",
        "max_attempts": "",
    }
    response = post(admin_client, JOBS, data)
    assert [str(m) for m in response.context["messages"]] == [
        "Rescheduled 1 job. 1 other was left alone: only jobs not started yet (waiting or pending) can be "
        "rescheduled."
    ]
    pending.refresh_from_db()
    assert pending.run_at.isoformat() == "2031-05-04T03:02:01+00:00" and pending.priority == -7
    assert pending.max_attempts == 5
    assert not JobEvent.objects.exists()


@pytest.mark.parametrize(
    "values, error",
    [
        ({"priority": "300"}, "Ensure this value is less than or equal to 100."),
        ({}, "Give a run time, a priority or max attempts to change."),
    ],
)
def test_the_admin_action_shows_the_form_again_with_its_errors(admin_client, values, error):
    job = JobFactory()
    data = {"action": "reschedule", "post": "yes", "_selected_action": [job.pk], **values}
    page = post(admin_client, JOBS, data).content.decode()
    assert error in page
    job.refresh_from_db()
    assert job.priority == 0


def test_a_jobs_page_reschedules_it_and_returns_to_it(admin_client):
    job = JobFactory()
    act = reverse("admin:supaqueue_job_act", args=[job.pk])
    assert "Reschedule the selected job?" in admin_client.post(act, {"action": "reschedule"}).content.decode()
    response = admin_client.post(act, {"action": "reschedule", "post": "yes", "priority": "12"})
    assert response.url == reverse("admin:supaqueue_job_change", args=[job.pk])
    job.refresh_from_db()
    assert job.priority == 12


def test_rescheduling_needs_the_change_permission(staff_client):
    client = staff_client("view_job")
    job = JobFactory()
    post(client, JOBS, {"action": "reschedule", "post": "yes", "_selected_action": [job.pk], "priority": "5"})
    act = reverse("admin:supaqueue_job_act", args=[job.pk])
    assert client.post(act, {"action": "reschedule", "post": "yes", "priority": "5"}).status_code == 403
    job.refresh_from_db()
    assert job.priority == 0

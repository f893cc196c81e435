"""A schedule's key: the jobs it fires carry it, so a tick while the last one has not run enqueues nothing.

This is @pgpm/jobs' "already scheduled" (``run_scheduled_job`` refuses while the
schedule's last job is still there), done with the queue's own key dedupe. The
clock is passed in (``fire_due(now=...)``): no test waits for a real minute.
"""

from datetime import UTC, datetime

import pytest
from django.test import override_settings
from django.urls import reverse

from django_supaqueue import scheduling, tasks
from django_supaqueue.exceptions import InvalidSchedule
from django_supaqueue.models import Job, Queue, Schedule
from django_supaqueue.testing import run_pending
from tests.factories import ScheduleFactory

pytestmark = pytest.mark.django_db

NOOP = "tests.testapp.tasks.noop"


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def hourly(key: str = "hourly-report", **fields) -> Schedule:
    """An hourly schedule with a key, whose first tick is 2026-01-01 01:00 UTC."""
    schedule = ScheduleFactory(cron="0 * * * *", key=key, **fields)
    Schedule.objects.filter(pk=schedule.pk).update(next_run_at=utc(2026, 1, 1, 1))
    schedule.refresh_from_db()
    return schedule


def supaqueue_settings(**extra):
    from django.conf import settings

    return {**settings.SUPAQUEUE, **extra}


def test_the_jobs_a_schedule_fires_carry_its_key():
    hourly(key="nightly:report")
    (tick,) = scheduling.fire_due(now=utc(2026, 1, 1, 1, 0, 1))
    assert Job.objects.get(pk=tick.job_id).key == "nightly:report"


def test_a_schedule_without_a_key_fires_a_new_job_at_every_tick():
    hourly(key="")
    (first,) = scheduling.fire_due(now=utc(2026, 1, 1, 1, 0, 1))
    (second,) = scheduling.fire_due(now=utc(2026, 1, 1, 2, 0, 1))
    assert first.job_id != second.job_id
    assert Job.objects.filter(key__isnull=True).count() == 2


def test_a_tick_while_the_last_job_is_pending_enqueues_nothing():
    schedule = hourly()
    (first,) = scheduling.fire_due(now=utc(2026, 1, 1, 1, 0, 1))
    (second,) = scheduling.fire_due(now=utc(2026, 1, 1, 2, 0, 1))
    assert Job.objects.count() == 1
    assert second.job_id == first.job_id
    assert second.already_scheduled and not first.already_scheduled
    assert f"job #{first.job_id}" in second.error and "'hourly-report'" in second.error
    schedule.refresh_from_db()
    # The tick is spent (exactly once), the cadence goes on, the schedule says why nothing was enqueued.
    assert (schedule.last_run_at, schedule.next_run_at) == (utc(2026, 1, 1, 2), utc(2026, 1, 1, 3))
    assert schedule.last_job_id == first.job_id and schedule.already_scheduled
    assert scheduling.fire_due(now=utc(2026, 1, 1, 2, 0, 2)) == []


def test_once_the_last_job_ran_the_next_tick_enqueues_again():
    schedule = hourly()
    (first,) = scheduling.fire_due(now=utc(2026, 1, 1, 1, 0, 1))
    (ran,) = run_pending()
    assert ran.pk == first.job_id and ran.status == Job.Status.SUCCESSFUL
    (second,) = scheduling.fire_due(now=utc(2026, 1, 1, 2, 0, 1))
    assert second.job_id != first.job_id and not second.already_scheduled and second.error == ""
    assert Job.objects.get(pk=second.job_id).key == "hourly-report"
    schedule.refresh_from_db()
    assert schedule.last_job_id == second.job_id and schedule.last_error == ""
    assert not schedule.already_scheduled


@pytest.fixture
def fires_the_next_tick():
    """A task that fires the 02:00 tick while it runs, as a worker's scheduler would meanwhile."""

    def fire_next_tick() -> None:
        scheduling.fire_due(now=utc(2026, 1, 1, 2, 0, 1))

    yield tasks.task(name="tests.fire_next_tick")(fire_next_tick)
    tasks._registry.pop("tests.fire_next_tick", None)


def test_a_tick_while_the_last_job_runs_enqueues_the_next_one(fires_the_next_tick):
    # Where @pgpm/jobs skips (its last job is locked), a running job has given its key up here:
    # it may have read stale data, so the tick's job is written and runs after it.
    hourly(task_name=fires_the_next_tick.name)
    (first,) = scheduling.fire_due(now=utc(2026, 1, 1, 1, 0, 1))
    ran = run_pending()
    assert len(ran) == 2 and ran[0].pk == first.job_id
    second = Schedule.objects.get().ticks.get(tick_at=utc(2026, 1, 1, 2))
    assert second.job_id == ran[1].pk != first.job_id and not second.already_scheduled


def test_catch_up_with_a_key_enqueues_one_job_for_the_missed_ticks():
    hourly(missed="catch_up")
    fired = scheduling.fire_due(now=utc(2026, 1, 1, 3, 30))
    assert [t.tick_at for t in fired] == [utc(2026, 1, 1, h) for h in (1, 2, 3)]
    assert len({t.job_id for t in fired}) == 1 and Job.objects.count() == 1
    assert [t.already_scheduled for t in fired] == [False, True, True]


def test_an_http_schedule_keys_its_calls_too():
    Queue.objects.create(name="hooks", http_url="http://127.0.0.1:9/fn")
    hourly(task_name="", queue="hooks", http_path="sync", key="sync")
    (first,) = scheduling.fire_due(now=utc(2026, 1, 1, 1, 0, 1))
    (second,) = scheduling.fire_due(now=utc(2026, 1, 1, 2, 0, 1))
    assert Job.objects.get(pk=first.job_id).key == "sync"
    assert second.job_id == first.job_id and second.already_scheduled


def test_run_now_while_the_last_job_is_pending_says_already_scheduled(admin_client):
    schedule = hourly()
    (first,) = scheduling.fire_due(now=utc(2026, 1, 1, 1, 0, 1))
    response = admin_client.post(
        reverse("admin:supaqueue_schedule_changelist"),
        {"action": "run_now", "index": 0, "_selected_action": [schedule.pk]},
        follow=True,
    )
    (message,) = [str(m) for m in response.context["messages"]]
    assert "already scheduled" in message and f"#{first.job_id}" in message
    assert Job.objects.count() == 1


def test_the_admin_shows_an_already_scheduled_tick_with_its_job(admin_client):
    schedule = hourly(name="keyed")
    (first,) = scheduling.fire_due(now=utc(2026, 1, 1, 1, 0, 1))
    scheduling.fire_due(now=utc(2026, 1, 1, 2, 0, 1))
    listing = admin_client.get(reverse("admin:supaqueue_schedule_changelist")).content.decode()
    assert "Already scheduled" in listing and "Not enqueued" not in listing
    page = admin_client.get(reverse("admin:supaqueue_schedule_change", args=[schedule.pk])).content.decode()
    assert page.count(reverse("admin:supaqueue_job_change", args=[first.job_id])) >= 2
    assert "Already scheduled" in page and "Not enqueued" not in page


def test_the_admin_form_edits_the_key(admin_client):
    response = admin_client.post(
        reverse("admin:supaqueue_schedule_add"),
        {
            "name": "keyed",
            "task_name": NOOP,
            "key": "keyed:1",
            "cron": "0 2 * * *",
            "timezone": "UTC",
            "enabled": "on",
            "missed": "skip",
            "catch_up_limit": "10",
            "payload": "{}",
        },
    )
    assert response.status_code == 302
    assert Schedule.objects.get(name="keyed").key == "keyed:1"


def test_a_key_declared_in_settings_or_on_a_task_reaches_the_row():
    def nightly() -> None: ...

    tasks.task(cron="0 3 * * *", cron_key="nightly", name="tests.keyed_nightly")(nightly)
    declared = {"sync": {"task": NOOP, "cron": "0 * * * *", "key": "sync:all"}}
    try:
        with override_settings(SUPAQUEUE=supaqueue_settings(SCHEDULES=declared)):
            scheduling.sync_declared()
    finally:
        tasks._registry.pop("tests.keyed_nightly", None)
    keys = dict(Schedule.objects.values_list("name", "key"))
    assert keys == {"sync": "sync:all", "tests.keyed_nightly": "nightly"}


def test_a_key_that_could_never_be_stored_is_refused():
    with pytest.raises(InvalidSchedule, match="key"):
        tasks.task(cron="0 3 * * *", cron_key="", name="tests.empty_key")(lambda: None)
    declared = {"bad": {"task": NOOP, "cron": "0 * * * *", "key": "x\x00y"}}
    with (
        override_settings(SUPAQUEUE=supaqueue_settings(SCHEDULES=declared)),
        pytest.raises(InvalidSchedule, match="'bad' declared in code: key"),
    ):
        scheduling.sync_declared()

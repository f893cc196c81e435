"""Recurring schedules: timing, exactly-once firing across processes, missed ticks, code sync, HTTP, admin.

The clock is passed in (``fire_due(now=...)``): no test waits for a real minute.
"""

import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.test import override_settings
from django.urls import reverse

from django_supaqueue import cron, scheduling, tasks
from django_supaqueue.exceptions import InvalidSchedule
from django_supaqueue.models import Job, Queue, Schedule, ScheduleTick
from tests.factories import ScheduleFactory, ScheduleTickFactory
from tests.helpers import ROOT, database_url, wait_for

pytestmark = pytest.mark.django_db

NOOP = "tests.testapp.tasks.noop"
BERLIN = ZoneInfo("Europe/Berlin")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def make_schedule(created: datetime, **fields) -> Schedule:
    """A saved schedule whose next tick is counted from ``created`` rather than from the real clock."""
    schedule = ScheduleFactory(**fields)
    Schedule.objects.filter(pk=schedule.pk).update(next_run_at=schedule.timing().next_after(created))
    schedule.refresh_from_db()
    return schedule


def ticks(schedule: Schedule) -> list[datetime]:
    return list(schedule.ticks.filter(manual=False).order_by("tick_at").values_list("tick_at", flat=True))


# --------------------------------------------------------------------------- timing


def test_a_cron_schedule_fires_once_at_its_tick_and_moves_to_the_next():
    schedule = make_schedule(utc(2026, 1, 5, 12), cron="0 2 * * *")
    assert schedule.next_run_at == utc(2026, 1, 6, 2)
    assert scheduling.fire_due(now=utc(2026, 1, 6, 1, 59, 59)) == []
    (tick,) = scheduling.fire_due(now=utc(2026, 1, 6, 2, 0, 0, 300_000))
    assert tick.tick_at == utc(2026, 1, 6, 2)
    assert Job.objects.get(pk=tick.job_id).task_name == NOOP
    assert scheduling.fire_due(now=utc(2026, 1, 6, 2, 0, 1)) == []
    schedule.refresh_from_db()
    assert (schedule.last_run_at, schedule.next_run_at) == (utc(2026, 1, 6, 2), utc(2026, 1, 7, 2))
    assert schedule.last_job_id == tick.job_id


def test_the_cron_is_read_in_the_schedules_time_zone():
    schedule = make_schedule(utc(2026, 1, 5, 12), cron="0 9 * * *", timezone="America/New_York")
    assert schedule.next_run_at == utc(2026, 1, 5, 14)  # 09:00 EST


def test_the_payload_priority_queue_and_attempts_reach_the_job():
    make_schedule(
        utc(2026, 1, 1),
        cron="* * * * *",
        task_name="tests.testapp.tasks.record",
        payload={"n": 3},
        queue="nightly",
        priority=7,
        max_attempts=2,
    )
    (tick,) = scheduling.fire_due(now=utc(2026, 1, 1, 0, 1))
    job = Job.objects.select_related("queue").get(pk=tick.job_id)
    assert (job.payload, job.queue.name, job.priority, job.max_attempts) == ({"n": 3}, "nightly", 7, 2)


def test_schedule_info_fields_become_a_cron_expression():
    assert cron.rule_to_cron({"minute": [0, 15], "hour": [2], "dayOfWeek": [1]}) == "0,15 2 * * 1"
    # node-schedule counts months from 0 (January); a lone number is a one-element list.
    assert cron.rule_to_cron({"month": [0, 11], "date": 1, "hour": 0, "minute": 0}) == "0 0 1 1,12 *"
    assert cron.rule_to_cron({"second": [30], "minute": [5]}) == "30 5 * * * *"


def test_a_day_of_week_rule_fires_on_that_day_only():
    # 2026-01-04 is a Sunday; dayOfWeek 1 is Monday, as in node-schedule and cron.
    schedule = make_schedule(
        utc(2026, 1, 4, 12), schedule_info={"minute": [0, 15], "hour": [2], "dayOfWeek": [1]}
    )
    assert schedule.next_run_at == utc(2026, 1, 5, 2, 0)
    timing = schedule.timing()
    assert timing.next_after(utc(2026, 1, 5, 2, 0)) == utc(2026, 1, 5, 2, 15)
    assert timing.next_after(utc(2026, 1, 5, 2, 15)) == utc(2026, 1, 12, 2, 0)


def test_a_bounded_rule_never_fires_before_start_or_after_end():
    info = {"start": "2026-03-01T10:00:00Z", "end": "2026-03-01T10:12:00Z", "rule": "*/5 * * * *"}
    schedule = make_schedule(utc(2026, 2, 1), schedule_info=info)
    assert schedule.next_run_at == utc(2026, 3, 1, 10, 0)
    assert scheduling.fire_due(now=utc(2026, 3, 1, 9, 59)) == []
    for minute in (0, 5, 10):
        (tick,) = scheduling.fire_due(now=utc(2026, 3, 1, 10, minute, 30))
        assert tick.tick_at == utc(2026, 3, 1, 10, minute)
    schedule.refresh_from_db()
    assert schedule.next_run_at is None  # ended: 10:15 is after end
    assert scheduling.fire_due(now=utc(2026, 3, 1, 10, 20)) == []
    assert schedule.timing().latest_at_or_before(utc(2026, 3, 1, 9)) is None


def test_a_fixed_time_in_a_dst_zone_fires_once_on_both_changeover_days():
    timing = make_schedule(
        utc(2026, 3, 27), schedule_info={"hour": [2], "minute": [30], "tz": "Europe/Berlin"}
    ).timing()
    # 2026-03-29: 02:30 does not exist in Berlin; it fires at the first valid minute, 03:00 CEST.
    spring = [timing.next_after(utc(2026, 3, 28, 12)), timing.next_after(utc(2026, 3, 29, 12))]
    assert spring == [datetime(2026, 3, 29, 3, 0, tzinfo=BERLIN), datetime(2026, 3, 30, 2, 30, tzinfo=BERLIN)]
    assert spring[0] == utc(2026, 3, 29, 1, 0)
    # 2026-10-25: 02:30 happens twice; the schedule fires on the first only.
    first = timing.next_after(utc(2026, 10, 24, 12))
    assert first == utc(2026, 10, 25, 0, 30)
    assert timing.next_after(first) == utc(2026, 10, 26, 1, 30)


def test_ticks_after_a_dst_change_are_fired_at_the_new_offset():
    make_schedule(utc(2026, 3, 28, 12), cron="30 2 * * *", timezone="Europe/Berlin")
    (tick,) = scheduling.fire_due(now=utc(2026, 3, 29, 1, 0, 5))
    assert tick.tick_at == utc(2026, 3, 29, 1, 0)
    schedule = Schedule.objects.get()
    assert schedule.next_run_at == utc(2026, 3, 30, 0, 30)


# --------------------------------------------------------------------------- refused at save time


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"cron": "61 * * * *"}, "cron", "invalid cron expression '61 * * * *'"),
        ({"cron": "0 2 * *"}, "cron", "use five fields"),
        ({"cron": "0 2 * * *", "timezone": "Mars/Olympus"}, "timezone", "unknown time zone 'Mars/Olympus'"),
        ({"schedule_info": {"minute": [75]}}, "schedule_info", "'minute' must be a whole number"),
        ({"schedule_info": {"hours": [2]}}, "schedule_info", "unknown field(s) ['hours']"),
        (
            {"schedule_info": {"rule": "* * * * *", "start": "soon"}},
            "schedule_info",
            "'start' must be an ISO",
        ),
        (
            {"schedule_info": {"rule": "*/5 * * * *", "tz": "Nowhere/Land"}},
            "schedule_info",
            "unknown time zone",
        ),
        ({}, "cron", "either a cron expression or a schedule_info rule"),
    ],
)
@pytest.mark.django_db
def test_a_bad_timing_is_refused_by_clean_and_by_save(fields, field, message):
    schedule = Schedule(name="bad", task_name=NOOP, **fields)
    with pytest.raises(ValidationError) as caught:
        schedule.full_clean()
    assert message in " ".join(caught.value.message_dict[field])
    with pytest.raises(InvalidSchedule, match="."):
        schedule.save()
    assert not Schedule.objects.exists()


@pytest.mark.django_db
def test_an_unknown_task_or_a_queue_without_url_is_refused_by_clean():
    with pytest.raises(ValidationError) as caught:
        Schedule(name="x", task_name="nope.missing", cron="* * * * *").full_clean()
    assert "No task named 'nope.missing'" in caught.value.message_dict["task_name"][0]
    Queue.objects.create(name="plain")
    with pytest.raises(ValidationError) as caught:
        Schedule(name="y", queue="plain", cron="* * * * *").full_clean()
    assert "not an HTTP queue" in caught.value.message_dict["queue"][0]


def test_a_task_with_a_bad_cron_is_refused_at_import():
    with pytest.raises(InvalidSchedule, match="invalid cron expression"):
        tasks.task(cron="every day")(lambda: None)
    with pytest.raises(InvalidSchedule, match="needs arguments"):
        tasks.task(cron="0 2 * * *", name="tests.needs_args")(lambda n: n)


# --------------------------------------------------------------------------- exactly once


@pytest.mark.django_db
def test_a_tick_already_claimed_is_never_enqueued_again():
    schedule = make_schedule(utc(2026, 1, 1), cron="0 * * * *")
    ScheduleTickFactory(schedule=schedule, tick_at=utc(2026, 1, 1, 1))  # another worker won it
    assert scheduling.fire_due(now=utc(2026, 1, 1, 1, 0, 1)) == []
    assert not Job.objects.exists()
    schedule.refresh_from_db()
    assert schedule.next_run_at == utc(2026, 1, 1, 2)


RACER = """
import os, sys
from datetime import datetime, timedelta
import django
django.setup()
from django_supaqueue import scheduling
base = datetime.fromisoformat(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
for minute in range(int(sys.argv[2])):
    scheduling.fire_due(now=base + timedelta(minutes=minute, seconds=1))
"""


@pytest.mark.django_db(transaction=True)
def test_three_processes_firing_the_same_ticks_enqueue_each_tick_once():
    base, minutes = utc(2026, 1, 1), 30
    schedules = [
        make_schedule(base - timedelta(seconds=1), cron="* * * * *", missed="catch_up", catch_up_limit=1000)
        for _ in range(4)
    ]
    env = {
        "DATABASE_URL": database_url(),
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
    }
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, base.isoformat(), str(minutes)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for racer in racers:
        assert racer.stdout.readline().strip() == "ready"
    for racer in racers:  # released together
        racer.stdin.write("go\n")
        racer.stdin.flush()
    for racer in racers:
        racer.stdin.close()
        assert racer.wait(120) == 0
    expected = [base + timedelta(minutes=m) for m in range(minutes)]
    for schedule in schedules:
        assert ticks(schedule) == expected
    assert Job.objects.count() == 4 * minutes
    assert ScheduleTick.objects.filter(job__isnull=True).count() == 0


@pytest.mark.django_db(transaction=True)
def test_runworkers_processes_fire_a_schedule_once_per_tick(worker_processes):
    ScheduleFactory(name="every-second", cron="* * * * * *")
    for _ in range(3):
        worker_processes.start("-c", "2")
    wait_for(lambda: ScheduleTick.objects.count() >= 4, timeout=60)
    worker_processes.stop_all()
    fired = list(ScheduleTick.objects.values_list("tick_at", "job_id"))
    assert len({job for _, job in fired}) == len(fired)
    assert Job.objects.filter(task_name=NOOP).count() == len(fired)


# --------------------------------------------------------------------------- missed ticks


@pytest.mark.django_db
def test_skip_fires_only_the_latest_missed_tick():
    schedule = make_schedule(utc(2026, 1, 1, 12), cron="0 2 * * *")  # owed: Jan 2, 02:00
    (tick,) = scheduling.fire_due(now=utc(2026, 1, 4, 2, 30))  # down for two days and a half
    assert tick.tick_at == utc(2026, 1, 4, 2)
    schedule.refresh_from_db()
    assert schedule.next_run_at == utc(2026, 1, 5, 2)
    assert Job.objects.count() == 1


@pytest.mark.django_db
def test_catch_up_fires_every_missed_tick_oldest_first():
    schedule = make_schedule(utc(2026, 1, 1, 9, 59), cron="*/10 * * * *", missed="catch_up")
    fired = scheduling.fire_due(now=utc(2026, 1, 1, 10, 25))
    assert [t.tick_at for t in fired] == [utc(2026, 1, 1, 10, m) for m in (0, 10, 20)]
    assert list(Job.objects.order_by("id").values_list("id", flat=True)) == [t.job_id for t in fired]
    schedule.refresh_from_db()
    assert schedule.next_run_at == utc(2026, 1, 1, 10, 30)


@pytest.mark.django_db
def test_catch_up_stops_at_its_limit_keeping_the_newest_ticks():
    make_schedule(utc(2026, 1, 1, 9, 59), cron="*/10 * * * *", missed="catch_up", catch_up_limit=2)
    fired = scheduling.fire_due(now=utc(2026, 1, 1, 11, 5))
    assert [t.tick_at for t in fired] == [utc(2026, 1, 1, 10, 50), utc(2026, 1, 1, 11, 0)]


@pytest.mark.django_db
def test_enabling_a_schedule_owes_nothing_for_the_time_it_was_disabled():
    schedule = make_schedule(utc(2026, 1, 1), cron="* * * * *", missed="catch_up")
    scheduling.set_enabled([schedule], False)
    schedule.refresh_from_db()
    assert schedule.next_run_at is None and scheduling.fire_due(now=utc(2026, 1, 1, 0, 5)) == []
    scheduling.set_enabled([schedule], True)
    schedule.refresh_from_db()
    assert schedule.next_run_at > datetime.now(UTC)


# --------------------------------------------------------------------------- declared in code


@pytest.fixture
def nightly_task():
    def nightly_report(day: str = "today") -> str:
        return day

    registered = tasks.task(cron="0 3 * * *", cron_timezone="Europe/Berlin", name="tests.nightly_report")(
        nightly_report
    )
    yield registered
    tasks._registry.pop("tests.nightly_report", None)


SETTINGS_SCHEDULES = {
    "hourly-add": {"task": "tests.testapp.tasks.add", "cron": "0 * * * *", "payload": {"a": 1, "b": 2}},
    "weekly": {"task": NOOP, "schedule_info": {"hour": [2], "minute": [0], "dayOfWeek": [1]}},
}


def supaqueue_settings(**extra):
    from django.conf import settings

    return {**settings.SUPAQUEUE, **extra}


@pytest.mark.django_db
def test_declared_schedules_are_created_as_code_rows(nightly_task):
    with override_settings(SUPAQUEUE=supaqueue_settings(SCHEDULES=SETTINGS_SCHEDULES)):
        report = scheduling.sync_declared()
    assert sorted(report["created"]) == ["hourly-add", "tests.nightly_report", "weekly"]
    rows = {s.name: s for s in Schedule.objects.all()}
    assert {s.origin for s in rows.values()} == {Schedule.Origin.CODE}
    assert (rows["tests.nightly_report"].cron, rows["tests.nightly_report"].timezone) == (
        "0 3 * * *",
        "Europe/Berlin",
    )
    assert rows["hourly-add"].payload == {"a": 1, "b": 2} and rows["hourly-add"].next_run_at is not None


@pytest.mark.django_db
def test_a_sync_updates_changed_rows_and_keeps_ticks_owed_by_unchanged_ones():
    with override_settings(SUPAQUEUE=supaqueue_settings(SCHEDULES=SETTINGS_SCHEDULES)):
        scheduling.sync_declared()
    owed = utc(2026, 1, 1)
    Schedule.objects.filter(name="weekly").update(next_run_at=owed)  # workers were down
    changed = {**SETTINGS_SCHEDULES, "hourly-add": {**SETTINGS_SCHEDULES["hourly-add"], "priority": 5}}
    with override_settings(SUPAQUEUE=supaqueue_settings(SCHEDULES=changed)):
        report = scheduling.sync_declared()
    assert report["updated"] == ["hourly-add"] and report["created"] == []
    assert Schedule.objects.get(name="hourly-add").priority == 5
    assert Schedule.objects.get(name="weekly").next_run_at == owed


@pytest.mark.django_db
def test_a_schedule_gone_from_code_is_disabled_and_admin_rows_are_never_touched():
    admin_row = ScheduleFactory(name="weekly", cron="5 5 * * *")
    with override_settings(SUPAQUEUE=supaqueue_settings(SCHEDULES=SETTINGS_SCHEDULES)):
        report = scheduling.sync_declared()
    assert report["admin_owned"] == ["weekly"]
    with override_settings(SUPAQUEUE=supaqueue_settings(SCHEDULES={})):
        report = scheduling.sync_declared()
    assert report["disabled"] == ["hourly-add"]
    gone = Schedule.objects.get(name="hourly-add")
    assert not gone.enabled and gone.origin == Schedule.Origin.CODE
    admin_row.refresh_from_db()
    assert admin_row.enabled and admin_row.cron == "5 5 * * *" and admin_row.origin == Schedule.Origin.ADMIN


@pytest.mark.django_db(transaction=True)
def test_runworkers_syncs_declared_schedules_at_start_up():
    with override_settings(SUPAQUEUE=supaqueue_settings(SCHEDULES=SETTINGS_SCHEDULES)):
        call_command("runworkers", "--burst", "-c", "1")
    assert set(Schedule.objects.values_list("name", flat=True)) == {"hourly-add", "weekly"}


@pytest.mark.django_db
def test_a_bad_declared_schedule_stops_the_sync_with_its_name():
    bad = {"broken": {"task": NOOP, "cron": "0 25 * * *"}}
    with (
        override_settings(SUPAQUEUE=supaqueue_settings(SCHEDULES=bad)),
        pytest.raises(InvalidSchedule) as caught,
    ):
        scheduling.sync_declared()
    assert "'broken' declared in code" in str(caught.value) and "invalid cron" in str(caught.value)


# --------------------------------------------------------------------------- HTTP queues


@pytest.mark.django_db(transaction=True)
def test_a_schedule_can_call_an_http_queue(drain, http_server):
    Queue.objects.create(name="hooks", http_url=http_server.url + "/fn")
    make_schedule(
        utc(2026, 1, 1), task_name="", queue="hooks", http_path="nightly", payload={"k": 1}, cron="0 * * * *"
    )
    (tick,) = scheduling.fire_due(now=utc(2026, 1, 1, 1, 0, 2))
    job = Job.objects.get(pk=tick.job_id)
    assert (job.task_name, job.http_path) == ("", "nightly")
    with override_settings(SUPAQUEUE=supaqueue_settings(SCHEDULE_INTERVAL=None)):  # no firing by the clock
        drain(["hooks"])
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCESSFUL
    (request,) = http_server.requests
    assert (request["method"], request["path"], request["body"]) == ("POST", "/fn/nightly", b'{"k":1}')


@pytest.mark.django_db
def test_a_target_that_went_away_spends_the_tick_and_records_why():
    Queue.objects.create(name="hooks", http_url="http://127.0.0.1:9/fn")
    schedule = make_schedule(utc(2026, 1, 1), task_name="", queue="hooks", cron="0 * * * *")
    Queue.objects.filter(name="hooks").update(http_url="")
    (tick,) = scheduling.fire_due(now=utc(2026, 1, 1, 1, 0, 2))
    assert tick.job is None and "not an HTTP queue" in tick.error
    schedule.refresh_from_db()
    assert "not an HTTP queue" in schedule.last_error and schedule.next_run_at == utc(2026, 1, 1, 2)


# --------------------------------------------------------------------------- admin

SCHEDULES = reverse("admin:supaqueue_schedule_changelist")


def post_action(client, action, objs):
    return client.post(SCHEDULES, {"action": action, "index": 0, "_selected_action": [o.pk for o in objs]})


@pytest.mark.django_db
def test_the_list_shows_target_timing_runs_and_last_outcome(admin_client):
    schedule = make_schedule(utc(2026, 1, 1), cron="0 * * * *", name="hourly")
    scheduling.fire_due(now=utc(2026, 1, 1, 1, 0, 1))
    page = admin_client.get(SCHEDULES).content.decode()
    assert "hourly" in page and NOOP in page and "<code>0 * * * *</code> UTC" in page
    assert 'class="sq-badge sq-pending"' in page
    change = admin_client.get(reverse("admin:supaqueue_schedule_change", args=[schedule.pk])).content.decode()
    job = Job.objects.get()
    assert reverse("admin:supaqueue_job_change", args=[job.pk]) in change and "2026-01-01T01:00:00" in change


@pytest.mark.django_db
def test_the_add_form_shows_a_bad_cron_as_a_field_error(admin_client):
    response = admin_client.post(
        reverse("admin:supaqueue_schedule_add"),
        {
            "name": "bad",
            "task_name": NOOP,
            "cron": "0 2 * * 8x",
            "timezone": "UTC",
            "enabled": "on",
            "missed": "skip",
            "catch_up_limit": "10",
            "payload": "{}",
        },
    )
    assert response.status_code == 200
    assert "invalid cron expression" in " ".join(response.context["adminform"].form.errors["cron"])
    assert not Schedule.objects.exists()


@pytest.mark.django_db
def test_run_now_enqueues_one_job_and_keeps_the_cadence(admin_client):
    schedule = make_schedule(utc(2026, 1, 1), cron="0 * * * *")
    before = schedule.next_run_at
    post_action(admin_client, "run_now", [schedule])
    (tick,) = schedule.ticks.all()
    assert tick.manual and Job.objects.filter(pk=tick.job_id).exists()
    schedule.refresh_from_db()
    assert schedule.next_run_at == before and schedule.last_run_at is None


@pytest.mark.django_db
def test_disable_and_enable_actions(admin_client):
    schedule = make_schedule(utc(2026, 1, 1), cron="0 * * * *")
    post_action(admin_client, "disable", [schedule])
    schedule.refresh_from_db()
    assert not schedule.enabled and schedule.next_run_at is None
    post_action(admin_client, "enable", [schedule])
    schedule.refresh_from_db()
    assert schedule.enabled and schedule.next_run_at is not None


@pytest.mark.django_db
def test_viewing_schedules_allows_no_action(staff_client):
    client = staff_client("view_schedule")
    schedule = make_schedule(utc(2026, 1, 1), cron="0 * * * *")
    response = client.get(SCHEDULES)
    assert response.status_code == 200 and response.context["action_form"] is None
    post_action(client, "run_now", [schedule])
    post_action(client, "disable", [schedule])
    schedule.refresh_from_db()
    assert schedule.enabled and not Job.objects.exists()
    assert staff_client_cannot_edit(client, schedule)


def staff_client_cannot_edit(client, schedule) -> bool:
    url = reverse("admin:supaqueue_schedule_change", args=[schedule.pk])
    client.post(url, {"name": "renamed", "task_name": NOOP, "cron": "0 * * * *", "timezone": "UTC"})
    schedule.refresh_from_db()
    return schedule.name != "renamed"


@pytest.mark.django_db
def test_code_rows_show_their_definition_read_only(admin_client):
    schedule = ScheduleFactory(name="coded", cron="0 * * * *", origin="code")
    form = admin_client.get(reverse("admin:supaqueue_schedule_change", args=[schedule.pk])).context[
        "adminform"
    ]
    assert set(form.form.fields) == {"enabled"}


def test_recent_outcomes_survive_the_retention_of_their_jobs():
    schedule = make_schedule(utc(2026, 1, 1), cron="0 * * * *")
    (tick,) = scheduling.fire_due(now=utc(2026, 1, 1, 1, 0, 1))
    Job.objects.filter(pk=tick.job_id).delete()
    (recent,) = scheduling.recent_ticks(schedule)
    assert recent.pk == tick.pk and recent.job is None


def test_supaqueue_schedules_lists_next_runs():
    make_schedule(
        utc(2026, 1, 4, 12), name="weekly", schedule_info={"hour": [2], "minute": [0], "dayOfWeek": [1]}
    )
    out = io.StringIO()
    call_command("supaqueue_schedules", "--json", stdout=out)
    (row,) = json.loads(out.getvalue())
    assert (row["name"], row["cron"], row["next_run_at"]) == (
        "weekly",
        "0 2 * * 1",
        "2026-01-05T02:00:00+00:00",
    )


def test_manage_py_check_reports_declared_schedules_that_cannot_fire():
    from django_supaqueue.checks import check_schedules

    bad = {
        "typo": {"task": "tests.testapp.tasks.nope", "cron": "0 2 * * *"},
        "no-fit": {"task": "tests.testapp.tasks.add", "cron": "0 2 * * *", "payload": {"c": 1}},
        "bad-zone": {"task": NOOP, "cron": "0 2 * * *", "timezone": "Atlantis"},
    }
    with override_settings(SUPAQUEUE=supaqueue_settings(SCHEDULES=bad)):
        found = {e.msg.split(":")[0]: e.id for e in check_schedules()}
    assert found == {
        "Schedule 'typo'": "supaqueue.E031",
        "Schedule 'no-fit'": "supaqueue.E031",
        "Schedule 'bad-zone'": "supaqueue.E031",
    }
    with override_settings(SUPAQUEUE=supaqueue_settings(SCHEDULES={"x": {"cron": "* * * * *"}})):
        assert [e.id for e in check_schedules()] == ["supaqueue.E030"]


def test_a_row_with_a_broken_timing_stops_firing_and_says_why():
    schedule = make_schedule(utc(2026, 1, 1), cron="0 * * * *")
    Schedule.objects.filter(pk=schedule.pk).update(cron="0 99 * * *")  # written around save()
    assert scheduling.fire_due(now=utc(2026, 1, 1, 1, 0, 1)) == []
    schedule.refresh_from_db()
    assert schedule.next_run_at is None and "invalid cron expression" in schedule.last_error
    assert not Job.objects.exists()


def test_a_declared_http_schedule_may_name_a_queue_created_later():
    declared = {"ping": {"http_queue": "edge", "http_path": "ping", "cron": "*/5 * * * *"}}
    with override_settings(SUPAQUEUE=supaqueue_settings(SCHEDULES=declared)):
        assert scheduling.sync_declared()["created"] == ["ping"]
    ping = Schedule.objects.get(name="ping")
    assert ping.is_http and (ping.queue, ping.http_path) == ("edge", "ping")

"""@pgpm/jobs ``schedule_info`` rules read as node-schedule reads them, where that differs from cron.

node-schedule's RecurrenceRule fires when every field it names matches: with both
``date`` and ``dayOfWeek``, on the days that are both (cron fires on either). It
also takes ``year``, which cron has no field for.
"""

import io
import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.urls import reverse

from django_supaqueue import cron, scheduling
from django_supaqueue.exceptions import InvalidSchedule
from django_supaqueue.models import Schedule
from tests.factories import ScheduleFactory

pytestmark = pytest.mark.django_db

FRIDAY_13TH = {"date": [13], "dayOfWeek": [5], "hour": [9], "minute": [0]}


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def timing(info, timezone: str = "UTC") -> cron.Timing:
    return cron.timing(schedule_info=info, timezone=timezone)


def following(t: cron.Timing, moment: datetime, n: int) -> list[datetime]:
    ticks = []
    for _ in range(n):
        moment = t.next_after(moment)
        ticks.append(moment)
    return ticks


# --------------------------------------------------------------------------- date and dayOfWeek


def test_a_rule_with_date_and_day_of_week_fires_only_when_both_match():
    # Fridays the 13th from 2026: February, March, November, then August 2027.
    assert following(timing(FRIDAY_13TH), utc(2026, 1, 1), 4) == [
        utc(2026, 2, 13, 9),
        utc(2026, 3, 13, 9),
        utc(2026, 11, 13, 9),
        utc(2027, 8, 13, 9),
    ]


def test_both_must_match_going_back_too():
    t = timing(FRIDAY_13TH)
    assert t.latest_at_or_before(utc(2026, 11, 12)) == utc(2026, 3, 13, 9)
    assert list(t.ticks_back_from(utc(2026, 11, 13, 9)))[:3] == [
        utc(2026, 11, 13, 9),
        utc(2026, 3, 13, 9),
        utc(2026, 2, 13, 9),
    ]


def test_several_dates_and_days_fire_on_every_pair_that_matches():
    # The 1st or the 15th, when it is a Saturday or a Sunday.
    t = timing({"date": [1, 15], "dayOfWeek": [0, 6], "hour": 0, "minute": 0})
    assert following(t, utc(2026, 1, 1), 3) == [utc(2026, 2, 1), utc(2026, 2, 15), utc(2026, 3, 1)]


def test_both_are_read_on_the_local_calendar_of_the_schedule():
    # 23:30 on Friday the 13th in New York is already Saturday the 14th in UTC.
    t = timing({**FRIDAY_13TH, "hour": [23], "minute": [30]}, "America/New_York")
    tick = t.next_after(utc(2026, 1, 1))
    assert tick.astimezone(ZoneInfo("America/New_York")) == datetime(
        2026, 2, 13, 23, 30, tzinfo=ZoneInfo("America/New_York")
    )


def test_a_bounded_field_rule_keeps_both_conditions():
    info = {"start": "2026-03-01T00:00:00Z", "end": "2027-01-01T00:00:00Z", "rule": FRIDAY_13TH}
    assert following(timing(info), utc(2026, 1, 1), 3) == [utc(2026, 3, 13, 9), utc(2026, 11, 13, 9), None]


def test_a_cron_string_keeps_crons_either_day():
    # A cron expression keeps cron's rule: day-of-month OR day-of-week.
    t = cron.timing(cron="0 9 13 * 5", timezone="UTC")
    assert t.next_after(utc(2026, 1, 1)) == utc(2026, 1, 2, 9)  # a Friday, not the 13th


def test_a_schedule_fires_its_missed_friday_13th_and_not_the_13th_before():
    schedule = ScheduleFactory(schedule_info=FRIDAY_13TH, missed="catch_up")
    Schedule.objects.filter(pk=schedule.pk).update(next_run_at=utc(2026, 2, 13, 9))
    fired = scheduling.fire_due(now=utc(2026, 4, 20))
    assert [t.tick_at for t in fired] == [utc(2026, 2, 13, 9), utc(2026, 3, 13, 9)]
    schedule.refresh_from_db()
    assert schedule.next_run_at == utc(2026, 11, 13, 9)


def test_the_rule_is_shown_as_cron_saying_both_days_must_match():
    assert cron.rule_to_cron(FRIDAY_13TH) == "0 9 13 * 5 (day-of-month and day-of-week both)"
    ScheduleFactory(name="f13", schedule_info=FRIDAY_13TH)
    out = io.StringIO()
    call_command("supaqueue_schedules", "--json", stdout=out)
    (row,) = json.loads(out.getvalue())
    assert row["cron"] == "0 9 13 * 5 (day-of-month and day-of-week both)"


def test_the_admin_shows_the_rule_as_cron_saying_both_days_must_match(admin_client):
    ScheduleFactory(name="f13", schedule_info=FRIDAY_13TH)
    page = admin_client.get(reverse("admin:supaqueue_schedule_changelist")).content.decode()
    assert "<code>0 9 13 * 5 (day-of-month and day-of-week both)</code> UTC" in page


# --------------------------------------------------------------------------- year


def test_a_rule_with_a_year_fires_in_that_year_only():
    t = timing({"year": [2027], "month": [0], "date": [1], "hour": [0], "minute": [0]})
    assert t.next_after(utc(2026, 6, 1)) == utc(2027, 1, 1)
    assert t.next_after(utc(2027, 1, 1)) is None
    assert t.latest_at_or_before(utc(2030, 1, 1)) == utc(2027, 1, 1)
    assert t.latest_at_or_before(utc(2026, 12, 31)) is None


def test_years_skip_the_ones_not_named():
    t = timing({"year": [2026, 2028], "month": 1, "date": 29, "hour": 12, "minute": 0})
    assert following(t, utc(2026, 1, 1), 2) == [utc(2028, 2, 29, 12), None]  # 2026 has no Feb 29
    t = timing({"year": [2026, 2028], "month": 0, "date": 1, "hour": 0, "minute": 0})
    assert following(t, utc(2025, 6, 1), 3) == [utc(2026, 1, 1), utc(2028, 1, 1), None]
    assert list(t.ticks_back_from(utc(2031, 1, 1))) == [utc(2028, 1, 1), utc(2026, 1, 1)]


def test_a_year_with_date_and_day_of_week():
    t = timing({**FRIDAY_13TH, "year": 2027})
    assert following(t, utc(2026, 1, 1), 2) == [utc(2027, 8, 13, 9), None]


def test_a_schedule_whose_years_are_over_has_ended():
    schedule = ScheduleFactory(schedule_info={"year": [2020], "hour": [2], "minute": [0]})
    assert schedule.next_run_at is None


def test_the_rule_is_shown_as_cron_with_its_years():
    info = {"year": [2028, 2027], "month": [0], "date": [1], "hour": [0], "minute": [0]}
    assert cron.rule_to_cron(info) == "0 0 1 1 * (in 2027, 2028)"


@pytest.mark.parametrize("year", [["2027"], [], 1969, 10_000, 2027.5, True])
def test_a_year_that_is_not_a_whole_number_in_range_is_refused(year):
    schedule = Schedule(name="bad", task_name="tests.testapp.tasks.noop", schedule_info={"year": year})
    with pytest.raises(ValidationError) as caught:
        schedule.full_clean()
    assert "'year' must be a whole number" in " ".join(caught.value.message_dict["schedule_info"])
    with pytest.raises(InvalidSchedule, match="'year'"):
        schedule.save()

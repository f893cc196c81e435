"""When a schedule fires: cron expressions and @pgpm/jobs ``schedule_info`` rules as tick times.

Parsing and next-fire arithmetic belong to cronsim, which handles daylight
saving time the way Debian cron does: a job at a fixed time fires once on the
day clocks go back, and at the first valid minute when its time does not exist.
This module only turns ``schedule_info`` rules into cron expressions and adds
time zones, the rules' ``start``/``end`` bounds, and what node-schedule's rules
say that cron cannot, around cronsim: a rule naming both ``date`` and
``dayOfWeek`` fires on days that are both (cron: either), and ``year`` names
the years it fires in (cron has no year). Those two filter cronsim's ticks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from .exceptions import InvalidSchedule

#: node-schedule's RecurrenceRule fields that @pgpm/jobs stores in schedule_info, in cron's order,
#: with their ranges and the offset that maps them onto cron (node-schedule months are 0-11).
RULE_FIELDS: dict[str, tuple[int, int, int]] = {
    "second": (0, 59, 0),
    "minute": (0, 59, 0),
    "hour": (0, 23, 0),
    "date": (1, 31, 0),
    "month": (0, 11, 1),
    "dayOfWeek": (0, 6, 0),
}
#: node-schedule's ``year``: whole years, from the first of the Unix epoch (a two-digit year is a typo).
YEAR_RANGE = (1970, 9999)
_BOUNDED_KEYS = {"start", "end", "rule", "tz"}


@dataclasses.dataclass(frozen=True)
class Timing:
    """A cron expression in a time zone, optionally bounded and filtered: the ticks a schedule fires on.

    Ticks come back in UTC: a wall-clock time that happens twice (clocks going
    back) never compares equal across zones (PEP 495), a UTC instant always does.
    ``weekdays`` (0 = Sunday) and ``years`` keep only the ticks that fall on them,
    on the zone's calendar: they are what a node-schedule rule says that cron cannot.
    """

    cron: str
    zone: ZoneInfo
    start: datetime | None = None
    end: datetime | None = None
    weekdays: frozenset[int] | None = None
    years: frozenset[int] | None = None

    @property
    def expression(self) -> str:
        """How the timing is shown: the cron expression, with what cron cannot say noted after it."""
        shown, notes = self.cron, []
        if self.weekdays is not None:
            fields = self.cron.split()
            shown = " ".join([*fields[:-1], ",".join(map(str, sorted(self.weekdays)))])
            notes.append("day-of-month and day-of-week both")
        if self.years is not None:
            notes.append("in " + ", ".join(map(str, sorted(self.years))))
        return f"{shown} ({'; '.join(notes)})" if notes else shown

    def next_after(self, moment: datetime) -> datetime | None:
        """The first tick strictly after ``moment`` (and not before ``start``), or None past ``end``."""
        if self.start is not None and moment < self.start:
            moment = self.start - timedelta(microseconds=1)
        cursor: datetime | None = moment.astimezone(self.zone)
        while cursor is not None and (tick := _step(CronSim(self.cron, cursor))) is not None:
            if self.end is not None and tick > self.end:
                return None
            if self._keeps(tick):
                return tick.astimezone(UTC)
            cursor = self._resume_after(tick)
        return None

    def latest_at_or_before(self, moment: datetime) -> datetime | None:
        """The last tick at or before ``moment`` (and not after ``end``), or None before ``start``."""
        ticks = self.ticks_back_from(moment)
        return next(ticks, None)

    def ticks_back_from(self, moment: datetime) -> Iterator[datetime]:
        """Ticks at or before ``moment``, newest first, within ``start``/``end``."""
        if self.end is not None and moment > self.end:
            moment = self.end
        # cronsim's reverse iteration starts strictly before a whole second: nudge so it includes it.
        cursor: datetime | None = (moment + timedelta(microseconds=1)).astimezone(self.zone)
        while cursor is not None:
            ticks, cursor = CronSim(self.cron, cursor, reverse=True), None
            while (tick := _step(ticks)) is not None:
                if self.start is not None and tick < self.start:
                    return
                if not self._keeps(tick):
                    cursor = self._resume_before(tick)
                    break
                yield tick.astimezone(UTC)

    def _keeps(self, tick: datetime) -> bool:
        return (self.years is None or tick.year in self.years) and (
            self.weekdays is None or (tick.weekday() + 1) % 7 in self.weekdays
        )

    def _resume_after(self, tick: datetime) -> datetime | None:
        """Where to look on from a tick the filters drop: the next year named, else the next day.

        A whole day is skipped at once (not minute by minute), so finding the next Friday the
        13th costs a few cronsim steps per month, and a year not named costs one.
        """
        if self.years is not None and tick.year not in self.years:
            later = [year for year in self.years if year > tick.year]
            return self._day_start(date(min(later), 1, 1)) - timedelta(seconds=1) if later else None
        resume = self._day_start(tick.date() + timedelta(days=1)) - timedelta(seconds=1)
        return max(resume, tick)  # a day that repeats its last hour: step tick by tick out of it

    def _resume_before(self, tick: datetime) -> datetime | None:
        """As ``_resume_after``, backwards: the end of the last year named before, else the day before."""
        if self.years is not None and tick.year not in self.years:
            earlier = [year for year in self.years if year < tick.year]
            return self._day_start(date(max(earlier) + 1, 1, 1)) if earlier else None
        return self._day_start(tick.date())

    def _day_start(self, day: date) -> datetime:
        """The first instant of ``day`` in the zone (01:00 where midnight is skipped), in the zone."""
        midnight = datetime.combine(day, time(), tzinfo=self.zone)
        return midnight.astimezone(UTC).astimezone(self.zone)


def _step(ticks: CronSim) -> datetime | None:
    """cronsim's next tick, or None: none in its 50-year look-ahead, or past year 9999."""
    try:
        return next(ticks)
    except (StopIteration, OverflowError):
        return None


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``, or InvalidSchedule saying so."""
    if not isinstance(name, str) or not name:
        raise InvalidSchedule(f"time zone must be an IANA name such as 'Europe/Paris', not {name!r}.")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(
            f"unknown time zone {name!r}: use an IANA name such as 'UTC' or 'Europe/Paris'."
        ) from None


def check_cron(expression: str) -> str:
    """A cron expression cronsim accepts (5 fields, or 6 with seconds first), stripped."""
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidSchedule(f"cron expression must be a non-empty string, not {expression!r}.")
    expression = " ".join(expression.split())
    try:
        CronSim(expression, datetime(2000, 1, 1, tzinfo=UTC))
    except (CronSimError, ValueError) as exc:
        raise InvalidSchedule(
            f"invalid cron expression {expression!r} ({exc}): use five fields, minute hour "
            "day-of-month month day-of-week, e.g. '0 2 * * *' for 02:00 every day."
        ) from None
    return expression


def timing(*, cron: str = "", schedule_info: Any = None, timezone: str) -> Timing:
    """The Timing of a cron expression or a schedule_info rule (exactly one), in ``timezone``."""
    if bool(cron) == (schedule_info is not None):
        raise InvalidSchedule("a schedule needs either a cron expression or a schedule_info rule, not both.")
    if cron:
        return Timing(check_cron(cron), zone(timezone))
    return _from_schedule_info(schedule_info, timezone)


def _from_schedule_info(info: Any, timezone: str) -> Timing:
    if not isinstance(info, Mapping) or not info:
        raise InvalidSchedule(
            f"schedule_info must be a JSON object such as {{'hour': [2], 'minute': [0]}} or "
            f"{{'rule': '*/5 * * * *', 'start': ..., 'end': ...}}, not {info!r}."
        )
    tz = zone(info.get("tz") or timezone)
    if "rule" not in info:
        return rule_timing(info, tz)
    unknown = set(info) - _BOUNDED_KEYS
    if unknown:
        raise InvalidSchedule(
            f"schedule_info with a 'rule' takes only {sorted(_BOUNDED_KEYS)}, not {sorted(unknown)}."
        )
    rule = info["rule"]
    bounded = rule_timing(rule, tz) if isinstance(rule, Mapping) else Timing(check_cron(rule), tz)
    start = _moment(info.get("start"), "start", tz)
    end = _moment(info.get("end"), "end", tz)
    if start is not None and end is not None and end <= start:
        raise InvalidSchedule(f"schedule_info 'end' ({end.isoformat()}) must be after 'start'.")
    return dataclasses.replace(bounded, start=start, end=end)


def rule_to_cron(rule: Mapping[str, Any]) -> str:
    """A node-schedule rule as it is shown: cron, with what cron cannot say noted (``Timing.expression``)."""
    return rule_timing(rule, ZoneInfo("UTC")).expression


def rule_timing(rule: Mapping[str, Any], tz: ZoneInfo) -> Timing:
    """The Timing of a node-schedule RecurrenceRule object (``{"minute": [0, 15], "dayOfWeek": [1]}``).

    As in node-schedule, a field left out matches every value, except ``second``,
    which defaults to 0; ``month`` counts from 0 (January) and ``dayOfWeek`` from 0
    (Sunday); and a tick fires only where every field named matches, so ``date``
    with ``dayOfWeek`` means both (cron's day-of-month and day-of-week mean either).
    """
    unknown = set(rule) - set(RULE_FIELDS) - {"year", "tz"}
    if unknown:
        raise InvalidSchedule(
            f"schedule_info has unknown field(s) {sorted(unknown)}: use {', '.join(RULE_FIELDS)}, year "
            "(lists of whole numbers), or {'rule': '<cron>', 'start': ..., 'end': ...}."
        )
    if not set(rule) & {*RULE_FIELDS, "year"}:
        raise InvalidSchedule(f"schedule_info {dict(rule)!r} names no field: add e.g. 'minute': [0].")
    values = {field: _rule_values(rule, field, low, high) for field, (low, high, _) in RULE_FIELDS.items()}
    both_days = values["date"] is not None and values["dayOfWeek"] is not None
    parts = []
    for field, (_, _, offset) in RULE_FIELDS.items():
        if values[field] is None or (field == "dayOfWeek" and both_days):
            parts.append("0" if field == "second" else "*")
        else:
            parts.append(",".join(str(v + offset) for v in values[field]))
    seconds, rest = parts[0], parts[1:]
    years = _rule_values(rule, "year", *YEAR_RANGE)
    return Timing(
        check_cron(" ".join(rest) if seconds == "0" else " ".join(parts)),
        tz,
        weekdays=frozenset(values["dayOfWeek"]) if both_days else None,
        years=None if years is None else frozenset(years),
    )


def _rule_values(rule: Mapping[str, Any], field: str, low: int, high: int) -> list[int] | None:
    """A rule field's values, sorted, or None when the rule leaves it out (every value matches)."""
    values = rule.get(field)
    if values is None:
        return None
    if not isinstance(values, list):
        values = [values]
    if not values or any(
        isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high for v in values
    ):
        raise InvalidSchedule(
            f"schedule_info {field!r} must be a whole number or a non-empty list of whole numbers "
            f"in {low}..{high}, not {rule[field]!r}."
        )
    return sorted(set(values))


def _moment(value: Any, what: str, tz: ZoneInfo) -> datetime | None:
    """An ISO 8601 string (naive: in the schedule's zone) or epoch milliseconds, as JavaScript writes."""
    if value is None:
        return None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value / 1000, UTC)
        if isinstance(value, str):
            moment = datetime.fromisoformat(value)
            return moment.replace(tzinfo=tz) if moment.tzinfo is None else moment
    except (ValueError, OverflowError, OSError):
        pass
    raise InvalidSchedule(
        f"schedule_info {what!r} must be an ISO 8601 date-time (e.g. '2026-01-01T00:00:00Z') "
        f"or epoch milliseconds, not {value!r}."
    )

"""When a schedule fires: cron expressions and @pgpm/jobs ``schedule_info`` rules as tick times.

Parsing and next-fire arithmetic belong to cronsim, which handles daylight
saving time the way Debian cron does: a job at a fixed time fires once on the
day clocks go back, and at the first valid minute when its time does not exist.
This module only turns ``schedule_info`` rules into cron expressions and adds
time zones and the rules' ``start``/``end`` bounds around cronsim.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
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
_BOUNDED_KEYS = {"start", "end", "rule", "tz"}


@dataclasses.dataclass(frozen=True)
class Timing:
    """A cron expression in a time zone, optionally bounded: the ticks a schedule fires on.

    Ticks come back in UTC: a wall-clock time that happens twice (clocks going
    back) never compares equal across zones (PEP 495), a UTC instant always does.
    """

    cron: str
    zone: ZoneInfo
    start: datetime | None = None
    end: datetime | None = None

    def next_after(self, moment: datetime) -> datetime | None:
        """The first tick strictly after ``moment`` (and not before ``start``), or None past ``end``."""
        if self.start is not None and moment < self.start:
            moment = self.start - timedelta(microseconds=1)
        tick = next(CronSim(self.cron, moment.astimezone(self.zone))).astimezone(UTC)
        if self.end is not None and tick > self.end:
            return None
        return tick

    def latest_at_or_before(self, moment: datetime) -> datetime | None:
        """The last tick at or before ``moment`` (and not after ``end``), or None before ``start``."""
        ticks = self.ticks_back_from(moment)
        return next(ticks, None)

    def ticks_back_from(self, moment: datetime) -> Iterator[datetime]:
        """Ticks at or before ``moment``, newest first, within ``start``/``end``."""
        if self.end is not None and moment > self.end:
            moment = self.end
        # cronsim's reverse iteration starts strictly before a whole second: nudge so it includes it.
        for tick in CronSim(
            self.cron, (moment + timedelta(microseconds=1)).astimezone(self.zone), reverse=True
        ):
            if self.start is not None and tick < self.start:
                return
            yield tick.astimezone(UTC)


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
        return Timing(rule_to_cron(info), tz)
    unknown = set(info) - _BOUNDED_KEYS
    if unknown:
        raise InvalidSchedule(
            f"schedule_info with a 'rule' takes only {sorted(_BOUNDED_KEYS)}, not {sorted(unknown)}."
        )
    rule = info["rule"]
    cron = rule_to_cron(rule) if isinstance(rule, Mapping) else check_cron(rule)
    start = _moment(info.get("start"), "start", tz)
    end = _moment(info.get("end"), "end", tz)
    if start is not None and end is not None and end <= start:
        raise InvalidSchedule(f"schedule_info 'end' ({end.isoformat()}) must be after 'start'.")
    return Timing(cron, tz, start, end)


def rule_to_cron(rule: Mapping[str, Any]) -> str:
    """A node-schedule RecurrenceRule object (``{"minute": [0, 15], "dayOfWeek": [1]}``) as cron.

    As in node-schedule, a field left out matches every value, except ``second``,
    which defaults to 0; ``month`` counts from 0 (January) and ``dayOfWeek`` from 0 (Sunday).
    """
    unknown = set(rule) - set(RULE_FIELDS) - {"tz"}
    if unknown:
        raise InvalidSchedule(
            f"schedule_info has unknown field(s) {sorted(unknown)}: use {', '.join(RULE_FIELDS)} "
            "(lists of whole numbers), or {'rule': '<cron>', 'start': ..., 'end': ...}."
        )
    if not set(rule) & set(RULE_FIELDS):
        raise InvalidSchedule(f"schedule_info {dict(rule)!r} names no field: add e.g. 'minute': [0].")
    parts = []
    for field, (low, high, offset) in RULE_FIELDS.items():
        values = rule.get(field)
        if values is None:
            parts.append("0" if field == "second" else "*")
            continue
        if not isinstance(values, list):
            values = [values]
        if not values or any(
            isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high for v in values
        ):
            raise InvalidSchedule(
                f"schedule_info {field!r} must be a whole number or a non-empty list of whole numbers "
                f"in {low}..{high}, not {rule[field]!r}."
            )
        parts.append(",".join(str(v + offset) for v in sorted(set(values))))
    seconds, rest = parts[0], parts[1:]
    return check_cron(" ".join(rest) if seconds == "0" else " ".join(parts))


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

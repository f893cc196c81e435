"""Recurring jobs: firing due schedules, "run now", and syncing schedules declared in code.

Every statement a schedule runs lives here. Jobs are written only through
``producer.produce``, as every enqueue is (so each is announced), on Django's
connection, so that a tick and its job commit together.

**Exactly once.** A worker takes due schedule rows ``FOR UPDATE SKIP LOCKED``
(workers never wait for each other), and for each tick it fires, inserts a
``ScheduleTick`` row under a unique (schedule, tick time) constraint, enqueues the
job and moves ``next_run_at`` on, all in one transaction. A second worker either
skips the locked row, or sees the moved ``next_run_at``, or (should anything else
ever fire the same tick) loses on the constraint and enqueues nothing.

**Missed ticks** (no worker was running): ``skip`` fires the latest missed tick
once and drops the older ones; ``catch_up`` fires each missed tick, oldest first,
at most ``catch_up_limit`` of them (the newest ones).

**Already scheduled.** A schedule's ``key`` goes on the jobs it fires, so the
queue's key dedupe gives a tick the job still waiting under it instead of a new
one (@pgpm/jobs' ``run_scheduled_job`` refuses with "already scheduled"). The
tick is spent all the same, and records that job with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections, transaction

from . import conf
from . import queue as q
from .cron import Timing
from .exceptions import EnqueueError, InvalidOption, InvalidPayload, InvalidSchedule
from .models import ALREADY_SCHEDULED, Job, Queue, Schedule, ScheduleTick, default_timezone
from .producer import produce
from .tasks import get_task, registered_tasks

logger = logging.getLogger("django_supaqueue.schedules")

SCHEDULE = Schedule._meta.db_table
TICK = ScheduleTick._meta.db_table

#: Due schedules one worker fires per look; the rest wait for the next look (or another worker).
FIRE_BATCH = 50
#: Ticks kept per schedule (the "recent outcomes"); older ones are deleted as new ones are written.
TICKS_KEPT = 100
#: Serialises start-up syncs of workers starting at once on several hosts.
_SYNC_LOCK = 0x5C4ED


# --------------------------------------------------------------------------
# What a schedule enqueues
# --------------------------------------------------------------------------


def check_target(schedule: Schedule, *, http_queue_exists: bool = True) -> None:
    """Refuse a target that could never be enqueued: an unknown task, a payload it cannot take,
    a queue that is not an HTTP queue. Raises EnqueueError (UnknownTask, InvalidPayload, InvalidOption).

    ``http_queue_exists=False`` skips the look-up of the HTTP queue's row, which a deployment
    may create after the code that names it (a tick fired before then records the error).
    """
    if schedule.queue:
        q.check_queue_name(schedule.queue)
    if schedule.priority is not None:
        q.check_priority(schedule.priority)
    q.check_key(schedule.job_key)
    if not isinstance(schedule.payload, dict):
        raise InvalidPayload(f"payload must be a JSON object, not {type(schedule.payload).__name__}.")
    if schedule.is_http:
        from .handlers.http import check_path

        if not schedule.queue:
            raise InvalidOption("a schedule calls a task (task_name) or an HTTP queue (queue): name one.")
        check_path(schedule.http_path)
        if (
            http_queue_exists
            and not Queue.objects.using(_alias()).filter(name=schedule.queue).exclude(http_url="").exists()
        ):
            raise InvalidOption(
                f"queue {schedule.queue!r} is not an HTTP queue: name a task, or give the queue an HTTP URL."
            )
        return
    if schedule.http_path:
        raise InvalidOption("http_path is for calls to an HTTP queue: leave it blank for a task.")
    get_task(schedule.task_name).check_arguments((), schedule.payload)


def _job_spec(schedule: Schedule) -> q.JobSpec:
    """The job a tick writes, checked as enqueue() and enqueue_http() check theirs."""
    if schedule.is_http:
        from .handlers.http import http_job_spec

        return http_job_spec(
            schedule.queue,
            schedule.payload,
            schedule.http_path,
            priority=schedule.priority,
            max_attempts=schedule.max_attempts,
            key=schedule.job_key,
            tenant_id=schedule.tenant_id or None,
        )
    task = get_task(schedule.task_name)
    task.check_arguments((), schedule.payload)
    return task.job_spec(
        (),
        schedule.payload,
        queue=schedule.queue or None,
        priority=schedule.priority,
        run_at=None,
        key=schedule.job_key,
        max_attempts=schedule.max_attempts,
        tenant_id=schedule.tenant_id or None,
    )


# --------------------------------------------------------------------------
# Firing
# --------------------------------------------------------------------------

_DUE = f"""
WITH clock AS (SELECT COALESCE(%(now)s::timestamptz, clock_timestamp()) AS now)
SELECT s.id, clock.now FROM {SCHEDULE} s, clock
WHERE s.enabled AND s.next_run_at <= clock.now
ORDER BY s.next_run_at
LIMIT %(limit)s
FOR UPDATE OF s SKIP LOCKED
"""

_CLAIM_TICK = f"""
INSERT INTO {TICK} (schedule_id, tick_at, manual, fired_at, error)
VALUES (%(schedule)s, %(tick)s, %(manual)s, now(), '')
ON CONFLICT (schedule_id, tick_at) WHERE NOT manual DO NOTHING
RETURNING id
"""

_PRUNE_TICKS = f"""
DELETE FROM {TICK} WHERE schedule_id = %(schedule)s AND id <= (
    SELECT id FROM {TICK} WHERE schedule_id = %(schedule)s ORDER BY id DESC OFFSET %(keep)s LIMIT 1)
"""


def _alias() -> str:
    return conf.get("DATABASE")


def fire_due(now: datetime | None = None, *, limit: int = FIRE_BATCH) -> list[ScheduleTick]:
    """Fire every schedule due at ``now`` (default: the database's clock); returns the ticks fired.

    Safe to call from any number of processes at once: see the module docstring.
    """
    alias = _alias()
    fired: list[ScheduleTick] = []
    with transaction.atomic(using=alias), connections[alias].cursor() as cur:
        cur.execute(_DUE, {"now": now, "limit": limit})
        due = cur.fetchall()
        if not due:
            return []
        clock = due[0][1]
        schedules = (
            Schedule.objects.using(alias).filter(pk__in=[row[0] for row in due]).order_by("next_run_at")
        )
        for schedule in schedules:
            fired.extend(_fire(cur, schedule, clock))
    return fired


def _fire(cur: Any, schedule: Schedule, now: datetime) -> list[ScheduleTick]:
    try:
        timing = schedule.timing()
    except InvalidSchedule as exc:  # a row written around save(), or a time zone gone from the system
        logger.error("schedule %s cannot fire: %s", schedule.name, exc)
        _advance(
            schedule,
            last_run_at=schedule.last_run_at,
            next_run_at=None,
            error=str(exc),
            job_id=schedule.last_job_id,
        )
        return []
    ticks = _missed_ticks(schedule, timing, now)
    fired = [tick for tick in (_fire_tick(cur, schedule, at) for at in ticks) if tick is not None]
    last = fired[-1] if fired else None
    _advance(
        schedule,
        last_run_at=ticks[-1] if ticks else schedule.last_run_at,
        next_run_at=timing.next_after(now),
        error=last.error if last else schedule.last_error,
        job_id=last.job_id if last else schedule.last_job_id,
    )
    if fired:
        cur.execute(_PRUNE_TICKS, {"schedule": schedule.pk, "keep": TICKS_KEPT})
    return fired


def _missed_ticks(schedule: Schedule, timing: Timing, now: datetime) -> list[datetime]:
    """The ticks owed at ``now``, oldest first, as the schedule's missed-tick policy says."""
    owed_from = schedule.next_run_at
    if schedule.missed == Schedule.Missed.CATCH_UP:
        ticks = []
        for tick in timing.ticks_back_from(now):
            if tick < owed_from or len(ticks) >= schedule.catch_up_limit:
                break
            ticks.append(tick)
        return ticks[::-1]
    latest = timing.latest_at_or_before(now)
    return [latest] if latest is not None and latest >= owed_from else []


def _fire_tick(cur: Any, schedule: Schedule, at: datetime, *, manual: bool = False) -> ScheduleTick | None:
    """Claim the tick and enqueue its job; None when the tick was already fired (the constraint)."""
    cur.execute(_CLAIM_TICK, {"schedule": schedule.pk, "tick": at, "manual": manual})
    claimed = cur.fetchone()
    if claimed is None:
        return None
    tick = ScheduleTick(pk=claimed[0], schedule=schedule, tick_at=at, manual=manual)
    try:
        with transaction.atomic(using=_alias()):
            waiting = _job_holding(schedule.job_key)
            tick.job = produce(_job_spec(schedule))[0]
    except (EnqueueError, DatabaseError) as exc:  # the task went away, the queue lost its URL...: spent
        tick.error = f"{type(exc).__name__}: {exc}"
        logger.error("schedule %s could not enqueue its job: %s", schedule.name, tick.error)
    else:
        if tick.job.pk == waiting:
            tick.error = (
                f"{ALREADY_SCHEDULED}: job #{waiting} holds the key {schedule.key!r}, not started yet"
            )
            logger.info("schedule %s enqueued nothing: %s", schedule.name, tick.error)
    ScheduleTick.objects.using(_alias()).filter(pk=tick.pk).update(job=tick.job, error=tick.error)
    return tick


def _job_holding(key: str | None) -> int | None:
    """The job not started yet that holds ``key``: the one the key dedupe gives back instead of a new one."""
    if key is None:
        return None
    not_started = [Job.Status.WAITING, Job.Status.PENDING]
    holders = Job.objects.using(_alias()).filter(key=key, status__in=not_started)
    return holders.values_list("pk", flat=True).first()


def _advance(
    schedule: Schedule,
    *,
    last_run_at: datetime | None,
    next_run_at: datetime | None,
    error: str,
    job_id: int | None,
) -> None:
    Schedule.objects.using(_alias()).filter(pk=schedule.pk).update(
        last_run_at=last_run_at, next_run_at=next_run_at, last_error=error, last_job_id=job_id
    )


def run_now(schedule: Schedule) -> ScheduleTick:
    """Enqueue the schedule's job now, by hand; its cadence (next_run_at) is left as it was."""
    alias = _alias()
    with transaction.atomic(using=alias), connections[alias].cursor() as cur:
        cur.execute("SELECT now()")
        tick = _fire_tick(cur, schedule, cur.fetchone()[0], manual=True)
        if tick.job_id is not None:
            Schedule.objects.using(alias).filter(pk=schedule.pk).update(last_job_id=tick.job_id)
    return tick


def set_enabled(schedules: Iterable[Schedule], enabled: bool) -> list[str]:
    """Enable or disable schedules; enabling counts ticks from now, never the disabled stretch."""
    changed = []
    for schedule in schedules:
        if schedule.enabled != enabled:
            schedule.enabled = enabled
            schedule.save(update_fields=["enabled", "next_run_at", "updated_at"])
            changed.append(schedule.name)
    return changed


def recent_ticks(schedule: Schedule, limit: int = 20) -> list[ScheduleTick]:
    """The schedule's newest ticks with their jobs (None once retention deleted a job)."""
    return list(schedule.ticks.select_related("job").order_by("-id")[:limit])


# --------------------------------------------------------------------------
# Schedules declared in code: @task(cron=...) and SUPAQUEUE["SCHEDULES"]
# --------------------------------------------------------------------------

_SETTING_KEYS = {
    "task": "task_name",
    "http_queue": "queue",
    "http_path": "http_path",
    "queue": "queue",
    "payload": "payload",
    "priority": "priority",
    "max_attempts": "max_attempts",
    "key": "key",
    "tenant_id": "tenant_id",
    "cron": "cron",
    "schedule_info": "schedule_info",
    "timezone": "timezone",
    "enabled": "enabled",
    "missed": "missed",
    "catch_up_limit": "catch_up_limit",
}


def _row_defaults() -> dict[str, Any]:
    return {
        "task_name": "",
        "queue": "",
        "http_path": "",
        "payload": {},
        "priority": None,
        "max_attempts": None,
        "key": "",
        "tenant_id": None,
        "cron": "",
        "schedule_info": None,
        "timezone": default_timezone(),
        "enabled": True,
        "missed": Schedule.Missed.SKIP,
        "catch_up_limit": 10,
    }


def declared_schedules() -> dict[str, dict[str, Any]]:
    """Schedule rows as code declares them, by name: @task(cron=...) first, then settings."""
    declared: dict[str, dict[str, Any]] = {}
    for task in registered_tasks().values():
        if task.options.cron:
            fields = {"task_name": task.name, "cron": task.options.cron}
            if task.options.cron_timezone:
                fields["timezone"] = task.options.cron_timezone
            if task.options.cron_key:
                fields["key"] = task.options.cron_key
            declared[task.name] = {**_row_defaults(), **fields}
    for name, entry in (conf.get("SCHEDULES") or {}).items():
        if not isinstance(entry, dict):
            raise ImproperlyConfigured(f"SUPAQUEUE['SCHEDULES'][{name!r}] must be a dict.")
        unknown = set(entry) - set(_SETTING_KEYS)
        if unknown:
            raise ImproperlyConfigured(
                f"SUPAQUEUE['SCHEDULES'][{name!r}] has unknown key(s) {sorted(unknown)}; "
                f"use {', '.join(_SETTING_KEYS)}."
            )
        if ("task" in entry) == ("http_queue" in entry):
            raise ImproperlyConfigured(
                f"SUPAQUEUE['SCHEDULES'][{name!r}] needs 'task' or 'http_queue' (one)."
            )
        if name in declared:
            raise ImproperlyConfigured(
                f"schedule {name!r} is declared twice: in SUPAQUEUE['SCHEDULES'] and as @task(cron=...)."
            )
        declared[name] = {**_row_defaults(), **{_SETTING_KEYS[k]: v for k, v in entry.items()}}
    return declared


def sync_declared() -> dict[str, list[str]]:
    """Make the Schedule rows match code: create or update declared rows, disable vanished ones.

    Rows created in the admin are never touched (a declared name that clashes with
    one is reported and left alone). Timings that did not change keep their
    ``next_run_at``, so ticks missed while workers were down are still owed.
    """
    alias = _alias()
    declared = declared_schedules()
    report: dict[str, list[str]] = {"created": [], "updated": [], "disabled": [], "admin_owned": []}
    with transaction.atomic(using=alias), connections[alias].cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", [_SYNC_LOCK])
        existing = {s.name: s for s in Schedule.objects.using(alias).all()}
        for name, fields in declared.items():
            row = existing.get(name)
            if row is not None and row.origin == Schedule.Origin.ADMIN:
                logger.warning(
                    "schedule %s is declared in code but was created in the admin: left alone", name
                )
                report["admin_owned"].append(name)
                continue
            if row is not None and all(getattr(row, k) == v for k, v in fields.items()):
                continue
            row = row or Schedule(name=name, origin=Schedule.Origin.CODE)
            for key, value in fields.items():
                setattr(row, key, value)
            try:
                q.check_tenant_id(row.tenant_id or None)  # a form checks the field; settings, here
                check_target(row, http_queue_exists=False)
                row.save(using=alias)
            except (InvalidSchedule, EnqueueError) as exc:
                raise InvalidSchedule(f"schedule {name!r} declared in code: {exc}") from None
            report["updated" if name in existing else "created"].append(name)
        for name, row in existing.items():
            if row.origin == Schedule.Origin.CODE and name not in declared and row.enabled:
                set_enabled([row], False)
                report["disabled"].append(name)
    return report

"""Schedules: recurring jobs, and the ticks that make each one fire once."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.utils.translation import gettext_lazy as _

from ..cron import Timing, zone
from ..cron import timing as timing_of
from ..exceptions import EnqueueError, InvalidSchedule
from .job import Job
from .queue import PRIORITY_MAX, PRIORITY_MIN, queue_name_validator

#: How a tick's ``error`` (and the schedule's ``last_error``) begins when the schedule's key was
#: held by a job not started yet: the tick enqueued nothing and records that job instead.
ALREADY_SCHEDULED = "already scheduled"


def default_timezone() -> str:
    """settings.TIME_ZONE, else UTC: the zone a schedule's cron reads in when none is given."""
    return getattr(settings, "TIME_ZONE", None) or "UTC"


class Schedule(models.Model):
    """A recurring job (@pgpm/jobs' scheduled_jobs): what to enqueue, and when.

    The target is a task (``task_name``) or, with ``task_name`` blank, a call to the
    HTTP queue ``queue``. The timing is a ``cron`` expression or a ``schedule_info``
    rule, read in ``timezone``. ``next_run_at`` is the next tick owed; a worker that
    finds it due fires it (``django_supaqueue.scheduling``). Editing the timing, or
    enabling the schedule, recomputes it from now.
    """

    class Origin(models.TextChoices):
        ADMIN = "admin", _("Admin")
        CODE = "code", _("Code (@task cron= or SUPAQUEUE['SCHEDULES'])")

    class Missed(models.TextChoices):
        SKIP = "skip", _("Skip: fire the latest missed tick once")
        CATCH_UP = "catch_up", _("Catch up: fire every missed tick, up to the limit")

    name = models.CharField(max_length=200, unique=True)
    task_name = models.CharField(
        max_length=255, blank=True, help_text=_("Dotted path of the task (blank: a call to the HTTP queue).")
    )
    queue = models.CharField(
        max_length=100,
        blank=True,
        validators=[queue_name_validator],
        help_text=_("The jobs' queue (blank: the task's); for an HTTP call, the HTTP queue."),
    )
    http_path = models.CharField("HTTP path", max_length=1000, blank=True)
    payload = models.JSONField(default=dict, blank=True, help_text=_("Keyword arguments, or the JSON body."))
    key = models.CharField(
        max_length=255,
        blank=True,
        db_default="",
        help_text=_(
            "Job key of the jobs it fires: with the default dedupe, a tick while its last job is "
            "still pending enqueues nothing."
        ),
    )
    tenant_id = models.CharField(
        max_length=255,
        null=True,
        blank=True,
        help_text=_("Tenant of the jobs it fires (@pgpm/jobs' database_id); blank: none."),
    )
    priority = models.SmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(PRIORITY_MIN), MaxValueValidator(PRIORITY_MAX)]
    )
    max_attempts = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    cron = models.CharField(
        max_length=200, blank=True, help_text=_("minute hour day-of-month month day-of-week, e.g. 0 2 * * *")
    )
    schedule_info = models.JSONField(
        null=True,
        blank=True,
        help_text=_(
            'Instead of cron, a @pgpm/jobs rule: {"hour": [2], "minute": [0]} or '
            '{"rule": "*/5 * * * *", "start": "...", "end": "..."}.'
        ),
    )
    timezone = models.CharField(
        max_length=64, default=default_timezone, help_text=_("IANA time zone the timing is read in.")
    )
    enabled = models.BooleanField(default=True)
    missed = models.CharField(
        max_length=16,
        choices=Missed.choices,
        default=Missed.SKIP,
        help_text=_("What ticks missed while no worker ran become."),
    )
    catch_up_limit = models.PositiveIntegerField(
        default=10, validators=[MinValueValidator(1)], help_text=_("Most missed ticks a catch-up fires.")
    )
    origin = models.CharField(max_length=8, choices=Origin.choices, default=Origin.ADMIN, editable=False)
    last_run_at = models.DateTimeField(null=True, blank=True, editable=False)
    next_run_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_job = models.ForeignKey(
        Job,
        null=True,
        blank=True,
        editable=False,
        on_delete=models.DO_NOTHING,
        db_constraint=False,  # jobs are pruned by retention; the schedule keeps its history
        related_name="+",
    )
    last_error = models.TextField(blank=True, default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [
            # Workers look for due schedules every second: an index probe.
            models.Index(fields=["next_run_at"], condition=Q(enabled=True), name="supaqueue_schedule_due"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(cron="") | Q(schedule_info__isnull=False), name="supaqueue_schedule_has_timing"
            ),
            models.CheckConstraint(
                condition=~Q(task_name="") | ~Q(queue=""), name="supaqueue_schedule_has_target"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        # The timing is checked on every save, not only in forms: code and settings save rows too.
        # The next tick counts from the database's clock, which fires it (scheduling.fire_due):
        # a host whose clock is minutes ahead would skip the ticks of those minutes.
        from django.db import connections, router

        timing = self.timing()
        if not self.task_name and not self.queue:
            raise InvalidSchedule(f"schedule {self.name!r} needs a task or an HTTP queue to call.")
        if self._state.adding or getattr(self, "_saved_timing", None) != self._timing_key():
            self.next_run_at = None
            if self.enabled:
                alias = kwargs.get("using") or router.db_for_write(type(self), instance=self)
                with connections[alias].cursor() as cur:
                    cur.execute("SELECT clock_timestamp()")
                    self.next_run_at = timing.next_after(cur.fetchone()[0])
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], "next_run_at"}
        super().save(*args, **kwargs)
        self._saved_timing = self._timing_key()

    def clean(self) -> None:
        super().clean()
        errors = {}
        try:
            zone(self.timezone)
        except InvalidSchedule as exc:
            errors["timezone"] = str(exc)
        else:
            try:
                self.timing()
            except InvalidSchedule as exc:
                errors["cron" if self.cron or self.schedule_info is None else "schedule_info"] = str(exc)
        try:
            if schedule_target_check is not None:
                schedule_target_check(self)
        except EnqueueError as exc:
            errors["task_name" if self.task_name else "queue"] = str(exc)
        if errors:
            raise ValidationError(errors)

    @classmethod
    def from_db(cls, db, field_names, values, **kwargs):
        # Remember the timing as loaded: save() recomputes next_run_at only when it changed.
        instance = super().from_db(db, field_names, values, **kwargs)
        instance._saved_timing = instance._timing_key()
        return instance

    def _timing_key(self) -> tuple:
        return (self.cron, self.schedule_info, self.timezone, self.enabled)

    @property
    def is_http(self) -> bool:
        return not self.task_name

    @property
    def job_key(self) -> str | None:
        """The key its jobs carry; None when blank, or unsaved and left to the database's default."""
        return self.key if isinstance(self.key, str) and self.key else None

    @property
    def already_scheduled(self) -> bool:
        """The last tick found ``last_job`` still waiting under the key, so it enqueued nothing."""
        return self.last_error.startswith(ALREADY_SCHEDULED)

    def timing(self) -> Timing:
        """This schedule's ``cron.Timing``; raises InvalidSchedule for a bad expression, rule or zone."""
        return timing_of(cron=self.cron, schedule_info=self.schedule_info, timezone=self.timezone)


#: How ``Schedule.clean()`` refuses a target that could never be enqueued (an unknown task, a
#: payload it cannot take, a queue without an HTTP URL). Checking it needs the task registry, which
#: sits above the models, so the app installs ``scheduling.check_target`` here when it is ready
#: (``apps.py``) instead of the model importing it.
schedule_target_check: Callable[[Schedule], None] | None = None


class ScheduleTick(models.Model):
    """One firing of a schedule: the tick it was for and the job it enqueued.

    The unique (schedule, tick_at) pair is what makes a tick fire exactly once
    however many workers race for it: the tick row and its job are written in one
    transaction. Ticks fired by hand ("run now") are ``manual`` and outside it.
    """

    id = models.BigAutoField(primary_key=True)
    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="ticks")
    tick_at = models.DateTimeField()
    manual = models.BooleanField(default=False)
    fired_at = models.DateTimeField(db_default=Now())
    job = models.ForeignKey(
        Job, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["schedule", "-id"]
        verbose_name = _("schedule tick")
        constraints = [
            models.UniqueConstraint(
                fields=["schedule", "tick_at"], condition=Q(manual=False), name="supaqueue_tick_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.schedule_id} at {self.tick_at}"

    @property
    def already_scheduled(self) -> bool:
        """The tick's job was already waiting under the schedule's key: the tick enqueued nothing."""
        return self.error.startswith(ALREADY_SCHEDULED)

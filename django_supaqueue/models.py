"""The queue's tables: Queue, Worker, Job, CurrentJob, JobEvent, Schedule and ScheduleTick.

They mirror the seeds' queue / worker / job / current_job tables. The models
hold data and constraints only; every statement that moves a job through its
life cycle lives in ``django_supaqueue.queue``.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import F, Func, Q
from django.db.models.functions import Now
from django.utils.translation import gettext_lazy as _

PRIORITY_MIN = -100
PRIORITY_MAX = 100

queue_name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
    _("Queue names use letters, digits, '_', '.', ':' and '-', starting with a letter or digit."),
)


class Queue(models.Model):
    """A named queue and the defaults its jobs inherit.

    A null setting means "use the SUPAQUEUE setting", so that changing a global
    default reaches every queue nobody tuned by hand.
    """

    name = models.CharField(max_length=100, unique=True, validators=[queue_name_validator])
    max_attempts = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text=_("Attempts before a job fails for good (blank: SUPAQUEUE['MAX_ATTEMPTS'])."),
    )
    priority = models.SmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(PRIORITY_MIN), MaxValueValidator(PRIORITY_MAX)],
        help_text=_("Default priority of new jobs, -100..100, higher first."),
    )
    retry_backoff = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text=_("Seconds before the first retry; doubles each attempt."),
    )
    retry_backoff_max = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text=_("Longest wait between two attempts, in seconds."),
    )
    timeout = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.001)],
        help_text=_("Seconds an attempt may run before it is stopped and retried."),
    )

    class ExecutionMode(models.TextChoices):
        THREADS = "threads", _("Threads (fast; a timed-out attempt is interrupted at its next instruction)")
        PROCESSES = "processes", _("Processes (isolated; a timed-out attempt is killed)")

    execution_mode = models.CharField(
        max_length=16,
        choices=ExecutionMode.choices,
        default=ExecutionMode.THREADS,
        db_default=ExecutionMode.THREADS,
    )
    paused = models.BooleanField(
        default=False, db_default=False, help_text=_("Paused queues keep their jobs but run none.")
    )
    concurrency_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text=_("Most jobs of this queue running at once across all workers (blank: unlimited)."),
    )
    rate_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text=_("Most attempts started per rate period across all workers (blank: unlimited)."),
    )
    serial = models.BooleanField(
        default=False,
        db_default=False,
        help_text=_("Run at most one job of this queue at a time across all workers, in claim order."),
    )
    head_of_line = models.BooleanField(
        "head of line",
        default=True,
        db_default=True,
        help_text=_(
            "In a serial queue or group, a job waiting for its retry keeps its place: nothing behind it "
            "starts until it has run. Off: later jobs pass it."
        ),
    )
    rate_period = models.FloatField(
        default=1.0,
        db_default=1.0,
        validators=[MinValueValidator(0.001)],
        help_text=_("Length in seconds of the sliding window the rate limit counts in."),
    )

    class HTTPMethod(models.TextChoices):
        GET = "GET"
        POST = "POST"
        PUT = "PUT"
        PATCH = "PATCH"
        DELETE = "DELETE"

    http_url = models.CharField(
        "HTTP URL",
        max_length=2000,
        blank=True,
        default="",
        db_default="",
        help_text=_("Base URL an HTTP queue calls (blank: the queue runs Python tasks)."),
    )
    http_method = models.CharField(
        "HTTP method", max_length=8, choices=HTTPMethod.choices, default="POST", db_default="POST"
    )
    http_headers = models.JSONField(
        "HTTP headers",
        default=dict,
        blank=True,
        db_default=models.Value({}, models.JSONField()),
        help_text=_("Headers sent with every call (never secrets: use the secret alias)."),
    )
    http_secret = models.CharField(
        "HTTP secret alias",
        max_length=100,
        blank=True,
        default="",
        db_default="",
        help_text=_("Name of an entry of SUPAQUEUE['HTTP_SECRETS'] (the alias, never the value)."),
    )
    http_secret_header = models.CharField(
        "HTTP secret header",
        max_length=100,
        default="Authorization",
        db_default="Authorization",
        help_text=_("Header carrying the secret; Authorization sends 'Bearer <secret>'."),
    )
    http_retry_client_errors = models.BooleanField(
        "retry HTTP 4xx",
        default=False,
        db_default=False,
        help_text=_("Retry 4xx responses too (408 and 429 are always retried)."),
    )
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    updated_at = models.DateTimeField(auto_now=True, db_default=Now())

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(priority__isnull=True)
                | Q(priority__gte=PRIORITY_MIN, priority__lte=PRIORITY_MAX),
                name="supaqueue_queue_priority_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        # URLs are validated on every save, not only in forms: code paths count too.
        if self.http_url:
            from .handlers.http import check_queue_url

            self.http_url = check_queue_url(self.http_url, self.http_secret)
        super().save(*args, **kwargs)

    @property
    def is_http(self) -> bool:
        return bool(self.http_url)

    def clean(self) -> None:
        super().clean()
        from .handlers.http import check_header_name, check_queue_url

        try:
            if self.http_url:
                self.http_url = check_queue_url(self.http_url, self.http_secret)
            check_header_name(self.http_secret_header)
            for name in self.http_headers or {}:
                check_header_name(name)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


class Worker(models.Model):
    """One running ``runworkers`` process; leases hang on its heartbeat."""

    name = models.CharField(max_length=255, unique=True)
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    queues = models.JSONField(
        default=list, blank=True, help_text=_("Queues served; empty means every queue.")
    )
    concurrency = models.PositiveIntegerField(default=1)
    started_at = models.DateTimeField(db_default=Now())
    last_heartbeat_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Job(models.Model):
    """One unit of work: a task call (or HTTP call) and where it is in its life cycle."""

    class Status(models.TextChoices):
        WAITING = "waiting", _("Waiting for dependencies")
        PENDING = "pending", _("Pending")
        IN_PROGRESS = "in_progress", _("In progress")
        SUCCESSFUL = "successful", _("Successful")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")

    id = models.BigAutoField(primary_key=True)
    # No foreign-key constraint in the database: its check ran once per row at
    # commit and cost bulk enqueues 13%. Every statement that writes a job takes
    # queue_id from the queue row itself, and a trigger (migration 0013) refuses
    # to delete a queue that still has jobs, as PROTECT does in the ORM.
    queue = models.ForeignKey(
        Queue, on_delete=models.PROTECT, related_name="jobs", db_index=False, db_constraint=False
    )
    task_name = models.CharField(max_length=255, blank=True, help_text=_("Dotted path of the task."))
    payload = models.JSONField(default=dict, blank=True, db_default=models.Value({}, models.JSONField()))
    args = models.JSONField(default=list, blank=True, db_default=models.Value([], models.JSONField()))
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING, db_default=Status.PENDING
    )
    priority = models.SmallIntegerField(
        default=0,
        db_default=0,
        validators=[MinValueValidator(PRIORITY_MIN), MaxValueValidator(PRIORITY_MAX)],
    )
    run_at = models.DateTimeField(db_default=Now())
    # Plain integer fields: a PositiveIntegerField adds a CHECK of its own, and the
    # job row's invariants are one check (supaqueue_job_valid, below).
    attempts = models.IntegerField(default=0, db_default=0, validators=[MinValueValidator(0)])
    max_attempts = models.IntegerField(default=5, db_default=5, validators=[MinValueValidator(1)])
    key = models.CharField(max_length=255, null=True, blank=True)
    enabled = models.BooleanField(default=True, db_default=True, help_text=_("Held jobs are never claimed."))
    result = models.JSONField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="", db_default="")
    created_at = models.DateTimeField(db_default=Now(), editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    http_path = models.CharField(
        "HTTP path",
        max_length=1000,
        blank=True,
        default="",
        db_default="",
        help_text=_("Relative path appended to the HTTP queue's base URL."),
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
        db_constraint=True,
    )
    tenant_id = models.CharField(max_length=255, null=True, blank=True)
    trace_context = models.JSONField(
        null=True,
        blank=True,
        editable=False,
        help_text=_("W3C trace context of the code that enqueued the job (OpenTelemetry)."),
    )
    serial_group = models.CharField(
        max_length=255,
        null=True,
        blank=True,
        help_text=_("At most one job of a serial group runs at a time across all queues and workers."),
    )

    class OnDependencyFailure(models.TextChoices):
        CANCEL = "cancel", _("Cancel this job")
        RUN = "run", _("Run this job anyway")

    depends_on = models.ManyToManyField(
        "self",
        through="JobDependency",
        symmetrical=False,
        related_name="dependents",
        blank=True,
        help_text=_("Jobs that must succeed before this one runs."),
    )
    waiting_for = models.IntegerField(
        default=0,
        db_default=0,
        editable=False,
        validators=[MinValueValidator(0)],
        help_text=_("Dependencies that have not finished yet."),
    )
    has_dependents = models.BooleanField(
        default=False,
        db_default=False,
        editable=False,
        help_text=_("Set before a dependent is written, so finishing this job knows to settle them."),
    )
    on_dependency_failure = models.CharField(
        max_length=8,
        choices=OnDependencyFailure.choices,
        default=OnDependencyFailure.CANCEL,
        db_default=OnDependencyFailure.CANCEL,
        help_text=_("What happens when a dependency fails for good or is cancelled."),
    )

    class Meta:
        ordering = ["-id"]
        indexes = [
            # The claim path: runnable jobs only, in claim order, per queue.
            models.Index(
                "queue",
                models.F("priority").desc(),
                "run_at",
                "id",
                condition=Q(status="pending", enabled=True),
                name="supaqueue_job_claim",
            ),
            # Concurrency caps count running jobs per queue.
            models.Index(fields=["queue"], condition=Q(status="in_progress"), name="supaqueue_job_running"),
            models.Index(fields=["queue", "status"], name="supaqueue_job_queue_status"),
            # Retention finds the oldest finished jobs without scanning the table.
            models.Index(
                fields=["finished_at"], condition=Q(finished_at__isnull=False), name="supaqueue_job_finished"
            ),
            # The job API filters by owner and tenant; most jobs have neither.
            models.Index(fields=["owner"], condition=Q(owner__isnull=False), name="supaqueue_job_owner"),
            models.Index(
                fields=["tenant_id"], condition=Q(tenant_id__isnull=False), name="supaqueue_job_tenant"
            ),
            # The claim finds each serial group's head here; jobs without a group are not in it.
            models.Index(
                "serial_group",
                models.F("priority").desc(),
                "run_at",
                "id",
                condition=Q(status="pending", enabled=True, serial_group__isnull=False),
                name="supaqueue_job_group",
            ),
            # A serial queue's job waiting for its retry stays at the head (head of line): found here.
            models.Index(
                "queue",
                models.F("priority").desc(),
                "run_at",
                "id",
                condition=Q(status="pending", enabled=True, attempts__gt=0),
                name="supaqueue_job_retrying",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["key"],
                # Not started yet: waiting for dependencies, or pending.
                condition=Q(status__in=["waiting", "pending"], key__isnull=False),
                name="supaqueue_job_pending_key",
            ),
            # Every invariant of the row in one call (migration 0015): PostgreSQL reads
            # and plans each CHECK expression again for every INSERT statement, and the
            # six separate checks this replaces were a fifth of a single enqueue's work
            # in the database.
            models.CheckConstraint(
                condition=Func(
                    F("status"),
                    F("priority"),
                    F("max_attempts"),
                    F("attempts"),
                    F("waiting_for"),
                    function="supaqueue_job_is_valid",
                    output_field=models.BooleanField(),
                ),
                name="supaqueue_job_valid",
                violation_error_message=_(
                    "A job needs a known status, a priority in -100..100, max_attempts of at least 1, "
                    "and attempts and waiting_for of at least 0."
                ),
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.id} {self.task_name or self.queue_id} ({self.status})"


class JobDependency(models.Model):
    """An edge of the job graph: ``job`` runs only after ``depends_on`` has finished.

    ``settled`` flips once, when the dependency finishes (or at once if it had
    already), so a dependency that runs again never counts twice.
    """

    id = models.BigAutoField(primary_key=True)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="dependency_links", db_index=False)
    depends_on = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="dependent_links")
    position = models.PositiveSmallIntegerField(default=0, help_text=_("Order in the job's depends_on."))
    settled = models.BooleanField(default=False, db_default=False)

    class Meta:
        verbose_name = _("job dependency")
        verbose_name_plural = _("job dependencies")
        constraints = [
            models.UniqueConstraint(fields=["job", "depends_on"], name="supaqueue_dependency_unique"),
            models.CheckConstraint(
                condition=~Q(job=models.F("depends_on")), name="supaqueue_dependency_not_self"
            ),
        ]

    def __str__(self) -> str:
        return f"job {self.job_id} after job {self.depends_on_id}"


class CurrentJob(models.Model):
    """A running attempt: the lease a worker holds on a job.

    The unique job column is what guarantees a job runs at most once at a time;
    (job, attempt, worker) is the fence every completion must match. The
    serial columns are locks: the lease of a serial queue's job holds its queue,
    the lease of a grouped job its group, and their unique indexes let only one
    lease hold each. Every outcome deletes the lease, so the lock goes with it.
    """

    id = models.BigAutoField(primary_key=True)
    # No foreign-key constraints in the database on the lease and event rows:
    # their checks, one per row at every commit of the claim loop, cost the
    # drain a fifth of its throughput. The rows are written only by the queue's
    # statements, from the job and worker rows themselves; migration 0014's
    # triggers do what the constraints did on delete (a job's lease and events
    # go with it, a worker holding leases cannot be deleted), and the ORM
    # applies on_delete as always.
    job = models.OneToOneField(Job, on_delete=models.CASCADE, related_name="current", db_constraint=False)
    worker = models.ForeignKey(
        Worker, on_delete=models.PROTECT, related_name="current_jobs", db_constraint=False
    )
    attempt = models.PositiveIntegerField()
    started_at = models.DateTimeField(db_default=Now())
    lease_expires_at = models.DateTimeField()
    serial_queue = models.BigIntegerField(null=True, blank=True, help_text=_("Id of the serial queue held."))
    serial_group = models.CharField(max_length=255, null=True, blank=True)

    class Meta:
        verbose_name = _("current job")
        constraints = [
            models.UniqueConstraint(
                fields=["serial_queue"],
                condition=Q(serial_queue__isnull=False),
                name="supaqueue_current_queue",
            ),
            models.UniqueConstraint(
                fields=["serial_group"],
                condition=Q(serial_group__isnull=False),
                name="supaqueue_current_group",
            ),
        ]

    def __str__(self) -> str:
        return f"job {self.job_id} attempt {self.attempt} on {self.worker_id}"


class JobEvent(models.Model):
    """One step of a job's life cycle; a job's events are its full history.

    "enqueued" is not written on the hot enqueue path: a job's created_at says it.
    Migration 0004 adds a BRIN index on ``at`` for the dashboard's last hour.
    """

    class Kind(models.TextChoices):
        ENQUEUED = "enqueued", _("Enqueued")
        STARTED = "started", _("Started")
        SUCCEEDED = "succeeded", _("Succeeded")
        RETRIED = "retried", _("Failed, will retry")
        FAILED = "failed", _("Failed for good")
        CANCELLED = "cancelled", _("Cancelled")
        RELEASED = "released", _("Released by a stopping worker")
        MANUAL_RETRY = "manual_retry", _("Retried by hand")
        RUN_NOW = "run_now", _("Run now by hand")
        HELD = "held", _("Held")
        HOLD_RELEASED = "hold_released", _("Released from hold")
        STOPPED = "stopped", _("Attempt stopped after a cancel")

    id = models.BigAutoField(primary_key=True)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events", db_constraint=False)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    attempt = models.PositiveIntegerField(null=True, blank=True)
    worker_name = models.CharField(max_length=255, blank=True, default="")
    at = models.DateTimeField(db_default=Now())
    duration = models.FloatField(null=True, blank=True, help_text=_("Seconds the attempt ran."))
    error_class = models.CharField(max_length=255, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    traceback = models.TextField(blank=True, default="")
    retry_at = models.DateTimeField(null=True, blank=True)
    http_status = models.PositiveSmallIntegerField(
        "HTTP status", null=True, blank=True, help_text=_("Status code of an HTTP queue's call.")
    )

    class Meta:
        ordering = ["job", "id"]
        verbose_name = _("job event")

    def __str__(self) -> str:
        return f"job {self.job_id}: {self.kind}"


class Dashboard(Job):
    """The admin dashboard's entry: a proxy with no table of its own.

    It exists so that the admin index links the dashboard like any model and
    so that seeing it is a permission of its own (``supaqueue.view_dashboard``).
    """

    class Meta:
        proxy = True
        verbose_name = _("dashboard")
        verbose_name_plural = _("dashboard")
        default_permissions = ("view",)


class QueueCall(models.Model):
    """When an attempt of a rate-limited queue started: the log its sliding window counts.

    Rows older than the window are deleted by the claims that follow.
    """

    id = models.BigAutoField(primary_key=True)
    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="+", db_index=False)
    at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["queue", "at"], name="supaqueue_call_queue_at")]
        verbose_name = _("queue call")

    def __str__(self) -> str:
        return f"{self.queue_id} at {self.at}"


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
        from django.utils import timezone as tz

        from .exceptions import InvalidSchedule

        timing = self.timing()
        if not self.task_name and not self.queue:
            raise InvalidSchedule(f"schedule {self.name!r} needs a task or an HTTP queue to call.")
        if self._state.adding or getattr(self, "_saved_timing", None) != self._timing_key():
            self.next_run_at = timing.next_after(tz.now()) if self.enabled else None
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], "next_run_at"}
        super().save(*args, **kwargs)
        self._saved_timing = self._timing_key()

    def clean(self) -> None:
        super().clean()
        from .cron import zone
        from .exceptions import EnqueueError, InvalidSchedule
        from .scheduling import check_target

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
            check_target(self)
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

    def timing(self):
        """This schedule's ``cron.Timing``; raises InvalidSchedule for a bad expression, rule or zone."""
        from .cron import timing

        return timing(cron=self.cron, schedule_info=self.schedule_info, timezone=self.timezone)


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

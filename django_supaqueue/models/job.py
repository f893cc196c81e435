"""Jobs: the job row, the edges of the job graph, a job's history, and the dashboard's proxy."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Func, Q
from django.db.models.functions import Now
from django.utils.translation import gettext_lazy as _

from .queue import PRIORITY_MAX, PRIORITY_MIN, Queue


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
    # No foreign-key constraint in the database: its check would run for every
    # job written. Every statement that writes a job takes queue_id from the queue
    # row itself, and a trigger (sql/protect_on_delete.sql) refuses to delete a
    # queue that still has jobs, as PROTECT does in the ORM.
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
    http_method = models.CharField(
        "HTTP method",
        max_length=7,
        blank=True,
        default="",
        db_default="",
        help_text=_("The method of an HTTP queue's call; blank: the queue's when the call is made."),
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
            # The dashboard's counts per queue and status. Pending and running jobs are counted
            # through the claim index (with held jobs here) and the one above, so that a job
            # written or claimed updates one index fewer (a seventh of a large enqueue_many's server time).
            models.Index(
                fields=["queue", "status"],
                condition=~Q(status__in=["pending", "in_progress"]),
                name="supaqueue_job_queue_status",
            ),
            models.Index(
                fields=["queue"], condition=Q(status="pending", enabled=False), name="supaqueue_job_held"
            ),
            # Retention finds the oldest finished jobs without scanning the table.
            models.Index(
                fields=["finished_at"], condition=Q(finished_at__isnull=False), name="supaqueue_job_finished"
            ),
            # The job API filters by owner and tenant; most jobs have neither.
            models.Index(fields=["owner"], condition=Q(owner__isnull=False), name="supaqueue_job_owner"),
            models.Index(
                fields=["tenant_id"], condition=Q(tenant_id__isnull=False), name="supaqueue_job_tenant"
            ),
            # Queues whose limits are per tenant: the claim walks their tenants with pending jobs
            # here, and takes each tenant's jobs in claim order. Jobs without a tenant are not in it.
            models.Index(
                "queue",
                "tenant_id",
                models.F("priority").desc(),
                "run_at",
                "id",
                condition=Q(status="pending", enabled=True, tenant_id__isnull=False),
                name="supaqueue_job_tenant_claim",
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
            # Every invariant of the row in one function call (sql/job_is_valid.sql):
            # PostgreSQL plans each CHECK expression again for every INSERT statement,
            # so one call is cheaper than a check per invariant.
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


class JobEvent(models.Model):
    """One step of a job's life cycle; a job's events are its full history.

    "enqueued" is not written on the hot enqueue path: a job's created_at says it.
    sql/dashboard_reads.sql adds a BRIN index on ``at`` for the dashboard's last hour.
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
        BLOCKED = "blocked", _("Blocked the worker's event loop")

    id = models.BigAutoField(primary_key=True)
    # No database constraint, as on the lease (CurrentJob): sql/job_deleted.sql deletes a job's events.
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

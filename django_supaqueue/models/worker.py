"""Workers and the leases they hold on running jobs."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.utils.translation import gettext_lazy as _

from .job import Job


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
    # their checks would run for every row the claim loop writes. The rows are
    # written only by the queue's statements, from the job and worker rows
    # themselves; triggers do what the constraints would on delete (a job's
    # lease and events go with it: sql/job_deleted.sql; a worker holding leases
    # cannot be deleted: sql/protect_on_delete.sql), and the ORM applies
    # on_delete as always.
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

"""Queues: a queue's name and the defaults its jobs inherit, and the call log its rate limit counts."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.utils.translation import gettext_lazy as _

from ..validators import check_header_name, check_queue_url

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
        ASYNC = "async", _("Async (async def tasks as coroutines on the worker's event loop)")

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

    class LimitScope(models.TextChoices):
        QUEUE = "queue", _("The queue: one cap and one rate limit for all its jobs")
        TENANT = "tenant", _("Each tenant: every tenant_id gets the cap and the rate limit to itself")

    limit_scope = models.CharField(
        max_length=8,
        choices=LimitScope.choices,
        default=LimitScope.QUEUE,
        db_default=LimitScope.QUEUE,
        help_text=_(
            "What the concurrency cap and the rate limit count: the whole queue, or each tenant's "
            "jobs apart, so that one busy tenant cannot hold back the others. Jobs without a "
            "tenant_id count as one tenant."
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
            # A serial queue runs one job at a time in one order: there is no room to share out.
            models.CheckConstraint(
                condition=Q(limit_scope="queue") | Q(serial=False),
                name="supaqueue_queue_serial_scope",
                violation_error_message=_("A serial queue's limits apply to the queue, not per tenant."),
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        # URLs are validated on every save, not only in forms: code paths count too.
        if self.http_url:
            self.http_url = check_queue_url(self.http_url, self.http_secret)
        super().save(*args, **kwargs)

    @property
    def is_http(self) -> bool:
        return bool(self.http_url)

    def clean(self) -> None:
        super().clean()
        try:
            if self.http_url:
                self.http_url = check_queue_url(self.http_url, self.http_secret)
            check_header_name(self.http_secret_header)
            for name in self.http_headers or {}:
                check_header_name(name)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


class QueueCall(models.Model):
    """When an attempt of a rate-limited queue started: the log its sliding window counts.

    Rows older than the window are deleted by the claims that follow.
    """

    id = models.BigAutoField(primary_key=True)
    queue = models.ForeignKey(Queue, on_delete=models.CASCADE, related_name="+", db_index=False)
    at = models.DateTimeField()
    #: The tenant whose window this start counts in, when the queue's limits are per tenant;
    #: '' otherwise, and for jobs without a tenant (no tenant_id is ever '').
    tenant_id = models.CharField(max_length=255, blank=True, default="", db_default="")

    class Meta:
        indexes = [models.Index(fields=["queue", "at"], name="supaqueue_call_queue_at")]
        verbose_name = _("queue call")

    def __str__(self) -> str:
        return f"{self.queue_id} at {self.at}"

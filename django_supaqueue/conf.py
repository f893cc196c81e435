"""The ``SUPAQUEUE`` settings dict and its defaults.

Every tunable lives here so that a reader can see all knobs in one place, and
so that tests can override one key with ``override_settings`` without the rest
falling back to surprising values.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: dict[str, Any] = {
    # Which entry of settings.DATABASES holds the queue tables.
    "DATABASE": "default",
    # Queue used by tasks and enqueue calls that do not name one.
    "DEFAULT_QUEUE": "default",
    # Per-job defaults, used when neither the enqueue call, the @task nor the
    # Queue row says otherwise.
    "MAX_ATTEMPTS": 5,
    "PRIORITY": 0,
    # Retry back-off: base * 2 ** (attempt - 1) seconds, capped, with jitter
    # drawn from [delay / 2, delay] so that a burst of failures spreads out.
    "RETRY_BACKOFF": 2.0,
    "RETRY_BACKOFF_MAX": 3600.0,
    # Seconds an attempt may run before it is stopped and retried; None = no limit.
    "TIMEOUT": None,
    # Largest payload + args accepted by enqueue, in bytes of JSON.
    "MAX_PAYLOAD_BYTES": 1_000_000,
    # On SIGTERM, running jobs get this many seconds to finish; what is still
    # running then is released (pending again at once). A second signal stops now.
    "SHUTDOWN_GRACE": 25.0,
    # Seconds an interrupted attempt (timed out, cancelled, released) may take to
    # stop. Its job keeps its lease until its body has stopped; a thread still
    # running after this long (blocked in C, or catching the interrupt) makes
    # the worker process release what it can and exit, which ends the thread.
    "INTERRUPT_GRACE": 30.0,
    # Retention: runworkers deletes finished jobs (and their events) older than
    # this many hours, a batch at a time. None keeps them forever.
    "RETAIN_SUCCESSFUL_HOURS": 24.0,
    "RETAIN_FAILED_HOURS": 24.0 * 14,
    "RETAIN_CANCELLED_HOURS": 24.0 * 14,
    "PRUNE_INTERVAL": 60.0,  # seconds between a worker's pruning passes
    "PRUNE_BATCH": 1000,  # jobs deleted per statement
    # LISTEN for new jobs (False: poll every POLL_INTERVAL only, e.g. behind a
    # PgBouncer in transaction mode), and the DATABASES alias the listener
    # connects through (None: the queue's DATABASE); LISTEN needs a direct one.
    "LISTEN": True,
    "LISTEN_DATABASE": None,
    # Bearer token that may read the metrics view (None: only users with view_job).
    "METRICS_TOKEN": None,
    # runworkers defaults.
    "CONCURRENCY": 10,
    "PROCESSES": 1,
    # Calls to HTTP queues in flight at once per process, as coroutines on one
    # event loop beside the job threads (0: HTTP calls take thread slots too).
    "ASYNC_CONCURRENCY": 100,
    # Seconds a job thread's Django connection is kept between attempts, whatever
    # CONN_MAX_AGE says for web requests. None: as long as the thread lives;
    # 0: closed after each attempt as Django closes it after a request.
    "JOB_CONN_MAX_AGE": None,
    # Fallback poll when no notification arrives (LISTEN/NOTIFY does the real work).
    "POLL_INTERVAL": 5.0,
    # Workers renew their leases every HEARTBEAT_INTERVAL seconds; an attempt
    # whose lease is LEASE_DURATION seconds old is recovered by another worker.
    "HEARTBEAT_INTERVAL": 5.0,
    "LEASE_DURATION": 30.0,
    # Run the single-job enqueue as a server-side prepared statement on Django's
    # connection (planned once per connection). False turns off only this one; a
    # PgBouncer older than 1.21 in transaction mode, which cannot keep prepared
    # statements, needs OPTIONS["prepare_threshold"] = None, which turns off all.
    "PREPARE_STATEMENTS": True,
    # Most jobs one claim statement takes.
    "CLAIM_BATCH": 100,
    # Connections a worker process claims on, each with a share of its slots
    # (never more than its concurrency): their round trips overlap, so short
    # jobs drain faster. 1: one claim loop, one connection.
    "CLAIM_CONNECTIONS": 3,
    # While a worker's recent jobs are short, it claims jobs ahead of its free
    # slots (never more than CLAIM_BATCH), as many as should start within this
    # many seconds: each round trip then carries more jobs. 0 turns it off.
    "PREFETCH_WAIT": 0.05,
    # HTTP queues. Secrets by alias, filled from the environment in settings; a
    # Queue row names the alias, never the value. Bind each to the hosts it may
    # be sent to: {"alias": {"value": "...", "hosts": ["fn.example.com"]}}; a
    # plain {"alias": "value"} goes wherever its queue points (check W007).
    "HTTP_SECRETS": {},
    # Refuse calls to loopback and link-local hosts (127.0.0.0/8, ::1,
    # 169.254.0.0/16 where cloud metadata lives, fe80::/10, 0.0.0.0): by name
    # when a queue is saved, by the address connected to when a call is made.
    "HTTP_REFUSE_LOCAL_HOSTS": False,
    # Seconds an HTTP call may take (connect, each read) when its queue sets no timeout.
    "HTTP_TIMEOUT": 30.0,
    # Bytes of a response body kept as the result; the rest is cut off.
    "HTTP_MAX_RESPONSE_BYTES": 65536,
    # Seconds added to every rate-limit window, covering the time between a
    # claim (where the start is counted) and the call reaching the endpoint.
    "RATE_LIMIT_MARGIN": 0.1,
    # The run endpoint and the token door of the job API: the token callers send
    # in the X-Supaqueue-Token header (None: token access is off).
    "API_TOKEN": None,
    # Most jobs one call of the run endpoint runs.
    "RUN_MAX_LIMIT": 50,
    # Queues created with these settings the first time they are needed
    # (name -> dict of Queue fields); later changes belong to the admin.
    "QUEUES": {},
    # Recurring jobs declared in settings (name -> dict): "task" (or "http_queue" and
    # "http_path"), "cron" (or "schedule_info"), and optionally "timezone", "payload",
    # "queue", "priority", "max_attempts", "key", "enabled", "missed", "catch_up_limit".
    # runworkers syncs them to Schedule rows at start-up (see scheduling.py).
    "SCHEDULES": {},
    # Seconds between a worker's looks for due schedules; None: this process fires none.
    "SCHEDULE_INTERVAL": 1.0,
}


_user: dict[str, Any] | None = None  # settings.SUPAQUEUE, until setting_changed says otherwise


def get(name: str) -> Any:
    """One setting.

    The dict is looked up once, not on every call: a single enqueue reads
    several settings, and Django's lazy settings are slow to go through on that
    path. override_settings (and pytest-django's ``settings``) send
    setting_changed, which makes the next call look again.
    """
    global _user
    user = _user
    if user is None:
        user = getattr(settings, "SUPAQUEUE", {}) or {}
        if not isinstance(user, dict):
            raise ImproperlyConfigured("settings.SUPAQUEUE must be a dict.")
        _user = user
    if name in user:
        return user[name]
    return DEFAULTS[name]


@receiver(setting_changed)
def _forget_supaqueue_settings(*, setting: str, **kwargs: Any) -> None:
    global _user
    if setting == "SUPAQUEUE":
        _user = None


def unknown_keys() -> list[str]:
    """Keys of settings.SUPAQUEUE that this version does not know (for system checks)."""
    user = getattr(settings, "SUPAQUEUE", {}) or {}
    return sorted(set(user) - set(DEFAULTS))

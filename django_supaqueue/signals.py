"""Django signals around a job's life cycle, for users' logging, alerting and metrics.

Kept here as Django keeps its task signals in ``django/tasks/signals.py``.
Every signal is sent with ``sender=Job`` and keyword arguments describing the
job (``job_id``, ``queue``, ``task_name`` and, where they apply, ``attempt``,
``duration``, ``error_class``, ``error_message``, ``retry_at``; ``job_enqueued``
gives ``queue_id`` and the ``job`` instead of ``queue``). Receivers run in the
process that caused the event: ``job_enqueued`` (sent by ``producer.produce``,
whichever way the job was made) and ``job_cancelled`` in the enqueuing or
cancelling code (inside its transaction; use ``transaction.on_commit`` for side
effects), the rest in the worker. A receiver that raises is logged and never
breaks the queue.
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

__all__ = [
    "job_enqueued",
    "job_started",
    "job_succeeded",
    "job_retried",
    "job_failed",
    "job_cancelled",
    "job_lost",
    "send",
]

logger = logging.getLogger("django_supaqueue.signals")

job_enqueued = Signal()
job_started = Signal()
job_succeeded = Signal()
job_retried = Signal()  # an attempt failed and another one is scheduled
job_failed = Signal()  # failed for good: no attempts left
job_cancelled = Signal()
job_lost = Signal()  # an attempt's worker stopped renewing its lease


def send(signal: Signal, **kwargs: Any) -> None:
    """Send ``signal`` if anyone listens; a failing receiver is logged, not raised."""
    if not signal.receivers:
        return
    from .models import Job  # not at import: users import their signals before models are ready

    for receiver, result in signal.send_robust(sender=Job, **kwargs):
        if isinstance(result, Exception):
            logger.error("supaqueue signal receiver %r failed: %r", receiver, result, exc_info=result)

"""OpenTelemetry: a span per job attempt, in the trace of the code that enqueued the job.

Optional: active only when ``opentelemetry-api`` is installed (the ``otel``
extra). At enqueue the current trace context is injected into the job's
``trace_context`` (W3C ``traceparent``/``tracestate``, a few dozen bytes, and
only when a span is active); the worker extracts it and runs the attempt in a
child span, so a web request and the jobs it caused show as one trace.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Status, StatusCode
except ImportError:  # not installed: every function here is a cheap no-op
    trace = None


def current_context_json() -> str | None:
    """The active trace context as JSON text for the job row, or None when no span is active."""
    if trace is None or not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return json.dumps(carrier, separators=(",", ":")) if carrier else None


@contextlib.contextmanager
def attempt_span(job: Any) -> Iterator[Any]:
    """Run one attempt inside a span that continues the enqueuer's trace (if it sent one)."""
    if trace is None or (not job.trace_context and not _provider_set()):
        yield None
        return
    parent = propagate.extract(job.trace_context) if job.trace_context else None
    tracer = trace.get_tracer("django_supaqueue")
    name = f"supaqueue.job {job.task_name or job.queue}"
    with tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.CONSUMER) as span:
        if span.is_recording():
            span.set_attributes(
                {
                    "supaqueue.job_id": job.id,
                    "supaqueue.queue": job.queue,
                    "supaqueue.task": job.task_name,
                    "supaqueue.attempt": job.attempt,
                }
            )
        yield span


def _provider_set() -> bool:
    """Whether the process has a tracer provider. Until it has, OpenTelemetry's default gives
    spans that record nothing, and an attempt without a parent to continue has nothing to
    pass on either: starting one anyway cost every attempt four times what this check does."""
    return not isinstance(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def record_outcome(span: Any, outcome: Any) -> None:
    """Mark the attempt's span failed (with the error) when the attempt failed."""
    if span is None or not span.is_recording():
        return
    error_class = getattr(outcome, "error_class", None)
    if error_class:
        span.set_status(Status(StatusCode.ERROR, f"{error_class}: {outcome.error_message}"))
        span.set_attribute("supaqueue.error_class", error_class)

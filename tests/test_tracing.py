"""OpenTelemetry: each attempt is a span in the trace of the code that enqueued the job."""

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from django_supaqueue.models import Job
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)

EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans():
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)  # once per process, as OpenTelemetry allows
    EXPORTER.clear()
    yield EXPORTER
    EXPORTER.clear()


def test_a_job_attempt_continues_the_trace_that_enqueued_it(drain, spans):
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("POST /orders") as request:
        job = tasks.add.enqueue(2, 3)
        batch = tasks.noop.enqueue_many([{"i": 1}, {"i": 2}])
    assert "traceparent" in Job.objects.get(pk=job.pk).trace_context
    drain()
    finished = {s.name: s for s in spans.get_finished_spans()}
    job_span = finished["supaqueue.job tests.testapp.tasks.add"]
    assert job_span.context.trace_id == request.get_span_context().trace_id
    assert job_span.parent.span_id == request.get_span_context().span_id
    assert job_span.attributes["supaqueue.job_id"] == job.pk and job_span.attributes["supaqueue.attempt"] == 1
    batch_spans = [
        s for s in spans.get_finished_spans() if s.name == "supaqueue.job tests.testapp.tasks.noop"
    ]
    assert len(batch_spans) == len(batch) == 2
    assert {s.context.trace_id for s in batch_spans} == {request.get_span_context().trace_id}


def test_a_failed_attempt_is_an_error_span_and_untraced_jobs_start_their_own_trace(drain, spans):
    job = tasks.always_fails.enqueue()  # no active span: nothing is stored
    assert Job.objects.get(pk=job.pk).trace_context is None
    drain()
    failed = [s for s in spans.get_finished_spans() if s.name.endswith("always_fails")]
    assert len(failed) == 2 and all(s.status.status_code == StatusCode.ERROR for s in failed)
    assert all(s.parent is None for s in failed)
    assert "ValueError" in failed[0].status.description


def test_without_a_tracer_provider_an_attempt_starts_a_span_only_to_continue_a_trace(monkeypatch):
    from django_supaqueue import tracing
    from django_supaqueue.queue import ClaimedJob

    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)
    job = ClaimedJob(1, "default", "tests.testapp.tasks.noop", {}, [], 1, 3, None, False)
    with tracing.attempt_span(job) as span:
        assert span is None
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    job.trace_context = {"traceparent": parent}
    with tracing.attempt_span(job) as span:
        assert span is not None
        assert format(span.get_span_context().trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"

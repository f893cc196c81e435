"""Prometheus metrics (optional: ``pip install django-supaqueue[metrics]``).

Counters and histograms are fed by the life-cycle signals in the process where
each event happens: workers count starts, outcomes and recoveries, web
processes count enqueues. Each process keeps its own, so totals are sums
across scrape targets (``sum by (queue, task)``): scrape every worker's
``runworkers --metrics-port``, and the web view for enqueues (under gunicorn,
set ``PROMETHEUS_MULTIPROC_DIR`` and the view aggregates its processes).
Gauges come from the database at scrape time, one indexed query each, so
every target reports the same cluster-wide values.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse

from . import conf, signals

try:
    import prometheus_client
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.core import GaugeMetricFamily
except ImportError:  # the extra is not installed: the view says so, nothing else changes
    prometheus_client = None

REGISTRY: Any = None
_metrics: dict[str, Any] = {}

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


def available() -> bool:
    return prometheus_client is not None


def install() -> None:
    """Create the metrics and connect them to the life-cycle signals (once per process)."""
    global REGISTRY
    if REGISTRY is not None or not available():
        return
    REGISTRY = CollectorRegistry(auto_describe=True)
    labels = ["queue", "task"]
    for name, doc in (
        ("enqueued", "Jobs enqueued"),
        ("started", "Attempts started"),
        ("succeeded", "Jobs that succeeded"),
        ("retried", "Failed attempts that will be retried"),
        ("failed", "Jobs that failed for good"),
        ("cancelled", "Jobs cancelled"),
    ):
        _metrics[name] = Counter(f"supaqueue_jobs_{name}", doc, labels, registry=REGISTRY)
    _metrics["attempts_failed"] = Counter(
        "supaqueue_attempts_failed", "Failed attempts (retried or final)", labels, registry=REGISTRY
    )
    _metrics["leases_recovered"] = Counter(
        "supaqueue_leases_recovered",
        "Attempts recovered from workers that stopped beating",
        registry=REGISTRY,
    )
    _metrics["duration"] = Histogram(
        "supaqueue_job_duration_seconds",
        "Attempt run time",
        labels,
        buckets=DURATION_BUCKETS,
        registry=REGISTRY,
    )
    _metrics["wait"] = Histogram(
        "supaqueue_job_wait_seconds",
        "Time from run_at (or enqueue) to start",
        ["queue"],
        buckets=DURATION_BUCKETS,
        registry=REGISTRY,
    )
    REGISTRY.register(DatabaseCollector())
    for signal, receiver in _RECEIVERS.items():
        signal.connect(receiver, weak=False, dispatch_uid=f"supaqueue-metrics-{receiver.__name__}")


def _count(name: str, kwargs: dict[str, Any]) -> None:
    _metrics[name].labels(kwargs.get("queue") or "", kwargs.get("task_name") or "").inc()


_queue_names: dict[int, str] = {}  # queue id -> name: queues are never renamed, rarely created


def _queue_name(queue_id: int) -> str:
    """A queue's name without a query per job (enqueue_many sends one signal per job)."""
    if queue_id not in _queue_names:
        from .models import Queue

        _queue_names.update(Queue.objects.values_list("id", "name"))
    return _queue_names.get(queue_id, "")


def _on_enqueued(sender: Any, queue_id: int | None = None, **kwargs: Any) -> None:
    name = _queue_name(queue_id) if queue_id else ""
    _metrics["enqueued"].labels(name, kwargs.get("task_name", "")).inc()


def _on_started(sender: Any, **kwargs: Any) -> None:
    _count("started", kwargs)
    if kwargs.get("wait") is not None:
        _metrics["wait"].labels(kwargs.get("queue") or "").observe(max(0.0, kwargs["wait"]))


def _on_succeeded(sender: Any, **kwargs: Any) -> None:
    _count("succeeded", kwargs)
    _observe_duration(kwargs)


def _on_retried(sender: Any, **kwargs: Any) -> None:
    _count("retried", kwargs)
    _count("attempts_failed", kwargs)
    _observe_duration(kwargs)


def _on_failed(sender: Any, **kwargs: Any) -> None:
    _count("failed", kwargs)
    _count("attempts_failed", kwargs)
    _observe_duration(kwargs)


def _on_cancelled(sender: Any, **kwargs: Any) -> None:
    _count("cancelled", kwargs)


def _on_lost(sender: Any, **kwargs: Any) -> None:
    _metrics["leases_recovered"].inc()


def _observe_duration(kwargs: dict[str, Any]) -> None:
    if kwargs.get("duration") is not None:
        _metrics["duration"].labels(kwargs.get("queue") or "", kwargs.get("task_name") or "").observe(
            kwargs["duration"]
        )


_RECEIVERS = {
    signals.job_enqueued: _on_enqueued,
    signals.job_started: _on_started,
    signals.job_succeeded: _on_succeeded,
    signals.job_retried: _on_retried,
    signals.job_failed: _on_failed,
    signals.job_cancelled: _on_cancelled,
    signals.job_lost: _on_lost,
}


class DatabaseCollector:
    """Cluster-wide gauges, computed at scrape time from the database."""

    def collect(self) -> Iterator[Any]:
        from . import stats

        snap = stats.snapshot()
        depth = GaugeMetricFamily(
            "supaqueue_queue_depth", "Jobs by queue and status", labels=["queue", "status"]
        )
        oldest = GaugeMetricFamily(
            "supaqueue_queue_oldest_runnable_seconds", "Age of the oldest runnable job", labels=["queue"]
        )
        for name, q in snap["queues"].items():
            for status in ("pending", "in_progress"):
                depth.add_metric([name, status], q["counts"].get(status, 0))
            oldest.add_metric([name], q.get("oldest_runnable_seconds") or 0.0)
        workers = GaugeMetricFamily("supaqueue_workers_alive", "Workers that beat within LEASE_DURATION")
        lease = float(conf.get("LEASE_DURATION"))
        workers.add_metric([], sum(1 for w in snap["workers"] if w["seconds_since_heartbeat"] <= lease))
        room = GaugeMetricFamily(
            "supaqueue_queue_rate_limit_room",
            "Calls a rate-limited queue may still start in its window (0: its jobs wait)",
            labels=["queue"],
        )
        for name, left in stats.rate_limit_room().items():
            room.add_metric([name], left)
        yield from (depth, oldest, workers, room)


def exposition() -> tuple[bytes, str]:
    """The metrics of this process (or of all processes sharing PROMETHEUS_MULTIPROC_DIR)."""
    install()
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(DatabaseCollector())
    return prometheus_client.generate_latest(registry), prometheus_client.CONTENT_TYPE_LATEST


def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET the metrics: with ``Authorization: Bearer <METRICS_TOKEN>``, or as a user with view_job."""
    if not available():
        return HttpResponse(
            "prometheus-client is not installed: pip install django-supaqueue[metrics]\n",
            status=501,
            content_type="text/plain",
        )
    token = conf.get("METRICS_TOKEN")
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    allowed = bool(token and given and hmac.compare_digest(given.encode(), str(token).encode()))
    if not allowed and not request.user.has_perm("supaqueue.view_job"):
        return HttpResponse("forbidden\n", status=403, content_type="text/plain")
    body, content_type = exposition()
    return HttpResponse(body, content_type=content_type)


def serve(port: int) -> None:
    """Serve this worker process's metrics on ``port`` (runworkers --metrics-port)."""
    install()
    prometheus_client.start_http_server(port, registry=REGISTRY)

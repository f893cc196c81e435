"""The HTTP door: the run endpoint (a worker inside a request) and the job API.

Authentication: the ``X-Supaqueue-Token`` header against SUPAQUEUE["API_TOKEN"]
(compared in constant time), or a logged-in Django user for the job API. A user
creates jobs they own and sees only those. Any caller may scope itself to a
tenant (@pgpm/jobs' database_id) with the ``X-Supaqueue-Tenant`` header: its
jobs are created with that tenant id and it sees only that tenant's jobs. A
job outside the caller's scope is a 404, exactly like a job that does not exist.

Malformed input (a field of the wrong type or out of range, a date that is no
date, text PostgreSQL cannot store) is a 400 whose JSON error names what is
wrong, and writes nothing: no request is answered with a 500.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import socket
import sys
import threading
import uuid
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.dateparse import parse_datetime
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from . import conf
from . import queue as q
from .api import enqueue_http
from .exceptions import EnqueueError, InvalidOption, InvalidSchedule, UnknownTask
from .models import Job, Queue
from .producer import produce

logger = logging.getLogger("django_supaqueue.worker")

TOKEN_HEADER = "HTTP_X_SUPAQUEUE_TOKEN"
TENANT_HEADER = "HTTP_X_SUPAQUEUE_TENANT"


class _Caller:
    def __init__(self, *, token: bool, user: Any = None, tenant_id: str | None = None) -> None:
        self.token = token
        self.user = user
        self.tenant_id = tenant_id


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _token_ok(request: HttpRequest) -> bool:
    expected = conf.get("API_TOKEN")
    given = request.META.get(TOKEN_HEADER)
    if not expected or given is None:
        return False
    return hmac.compare_digest(given.encode(), str(expected).encode())


def _caller(request: HttpRequest) -> _Caller | HttpResponse:
    """Who is calling: a token holder, a logged-in user, or nobody (401); 400 for a bad tenant header."""
    if TOKEN_HEADER in request.META:
        if not _token_ok(request):
            return _error(401, "invalid token")
        user = None
    else:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return _error(401, "authentication required: a session or the X-Supaqueue-Token header")
        if request.method == "POST":
            reason = CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})
            if reason is not None:
                return reason
    tenant_id = request.META.get(TENANT_HEADER) or None
    try:
        q.check_tenant_id(tenant_id)  # a tenant no job could have would fail the statement that looks
    except InvalidOption as exc:
        return _error(400, f"the X-Supaqueue-Tenant header is not a tenant id: {exc}")
    return _Caller(token=user is None, user=user, tenant_id=tenant_id)


def _scoped_jobs(caller: _Caller):
    jobs = Job.objects.using(conf.get("DATABASE")).select_related("queue")
    if not caller.token:
        jobs = jobs.filter(owner_id=caller.user.pk)
    if caller.tenant_id is not None:
        jobs = jobs.filter(tenant_id=caller.tenant_id)
    return jobs


def _job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.pk,
        "queue": job.queue.name,
        "task": job.task_name,
        "path": job.http_path,
        "method": (job.http_method or job.queue.http_method) if job.queue.http_url else None,
        "status": job.status,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "run_at": job.run_at.isoformat() if job.run_at else None,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "result": job.result,
        "last_error": job.last_error,
        "tenant_id": job.tenant_id,
    }


# --------------------------------------------------------------------------
# The job API
# --------------------------------------------------------------------------


@csrf_exempt  # a token needs no CSRF token; session callers are checked in _caller
@require_POST
def create_job(request: HttpRequest) -> HttpResponse:
    """Create one job: ``{"queue": "hooks", "payload": {...}, "path": "x"}`` or ``{"task": ...}``."""
    caller = _caller(request)
    if isinstance(caller, HttpResponse):
        return caller
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, RecursionError):
        return _error(400, "the body must be a JSON object")
    if not isinstance(body, dict):
        return _error(400, "the body must be a JSON object")
    unknown = set(body) - {
        "queue",
        "task",
        "payload",
        "args",
        "path",
        "method",
        "priority",
        "run_at",
        "key",
        "max_attempts",
    }
    if unknown:
        return _error(400, f"unknown fields: {', '.join(sorted(unknown))}")
    run_at = body.get("run_at")
    if run_at is not None:
        try:
            run_at = parse_datetime(run_at) if isinstance(run_at, str) else None
        except ValueError:  # well formed, but no date: month 13, February 30th
            run_at = None
        if run_at is None:
            return _error(400, "run_at must be an ISO 8601 date-time")
    options = {
        "priority": body.get("priority"),
        "run_at": run_at,
        "key": body.get("key"),
        "max_attempts": body.get("max_attempts"),
    }
    owner_id = None if caller.token else caller.user.pk
    try:
        if body.get("task"):
            if "path" in body or "method" in body:
                return _error(400, "path and method are only for HTTP queues")
            job = _enqueue_task(body, options, owner_id, caller.tenant_id)
        else:
            if not isinstance(body.get("queue"), str):
                return _error(400, "queue (an HTTP queue's name) or task is required")
            job = enqueue_http(
                body["queue"],
                body.get("payload") or {},
                body.get("path"),
                body.get("method"),
                owner=owner_id,
                tenant_id=caller.tenant_id,
                **options,
            )
    except EnqueueError as exc:
        return _error(400, str(exc))
    scoped = _scoped_jobs(caller).filter(pk=job.pk).first()
    if scoped is None:  # the key is held by a pending job the caller may not see: nothing was written
        return _error(409, f"key {options['key']!r} is held by a pending job outside your scope")
    return JsonResponse(_job_json(scoped), status=201)


def _enqueue_task(body: dict[str, Any], options: dict[str, Any], owner_id: Any, tenant_id: str | None) -> Job:
    """A Python task, validated exactly as enqueue() validates it."""
    payload = body.get("payload") or {}
    args = body.get("args") or []
    if not isinstance(payload, dict) or not isinstance(args, list):
        raise EnqueueError("payload must be a JSON object and args a JSON array")
    t = _known_task(body["task"])
    t.check_arguments(tuple(args), payload)
    spec = t.job_spec(tuple(args), payload, queue=body.get("queue"), **options)
    spec.owner_id = owner_id
    spec.tenant_id = tenant_id
    return produce(spec)[0]


def _known_task(name: Any) -> Any:
    """The task ``name`` names, if this process knows it already.

    A request never makes the web process import a module it names: that
    would run the module's code, and a module that fails to import would
    answer 500. Registered tasks, and Django Tasks in modules already
    imported, are known.
    """
    from .tasks import get_task, registered_tasks

    if not isinstance(name, str) or (
        name not in registered_tasks() and name.rpartition(".")[0] not in sys.modules
    ):
        raise UnknownTask(name)
    return get_task(name)


@require_GET
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    """A job's status, attempts, result and history, if the caller may see it (404 otherwise)."""
    caller = _caller(request)
    if isinstance(caller, HttpResponse):
        return caller
    job = _scoped_jobs(caller).filter(pk=job_id).first()
    if job is None:
        return _error(404, "no such job")
    data = _job_json(job)
    data["events"] = [
        {
            "kind": e.kind,
            "attempt": e.attempt,
            "at": e.at.isoformat(),
            "http_status": e.http_status,
            "error": f"{e.error_class}: {e.error_message}" if e.error_class else e.error_message,
        }
        for e in job.events.all()
    ]
    return JsonResponse(data)


# --------------------------------------------------------------------------
# The run endpoint: a worker that lives for one request
# --------------------------------------------------------------------------


@csrf_exempt  # token only
@require_POST
def run(request: HttpRequest) -> JsonResponse:
    """``POST run?queue=&status=pending|failed&limit=``: run up to ``limit`` jobs of ``queue`` now.

    ``status=failed`` first gives up to ``limit`` jobs that failed for good one
    more attempt each (a "manual_retry" event), then runs those. Only token
    holders may call it.
    """
    if not _token_ok(request):
        return _error(401, "invalid or missing X-Supaqueue-Token")
    name = request.GET.get("queue", "")
    try:
        q.check_queue_name(name)
    except InvalidOption as exc:
        return _error(400, str(exc))
    status = request.GET.get("status", "pending")
    if status not in ("pending", "failed"):
        return _error(400, "status must be pending or failed")
    try:
        limit = int(request.GET.get("limit", "1"))
    except ValueError:
        return _error(400, "limit must be a whole number")
    most = int(conf.get("RUN_MAX_LIMIT"))
    if not 1 <= limit <= most:
        return _error(400, f"limit must be between 1 and {most}")
    if not _queue_known(name):
        return _error(404, f"no queue named {name!r}")
    outcomes = run_jobs(name, status=status, limit=limit)
    return JsonResponse({"queue": name, "status": status, "jobs": outcomes})


def _queue_known(name: str) -> bool:
    """The queue has a row, or code names it (the default queue, a task's), so the worker creates it.

    A fresh deployment driven by pg_cron alone may have no queue row yet while a
    due schedule would make one: a 404 then would keep its jobs from ever firing.
    """
    from .tasks import registered_tasks

    if name == conf.get("DEFAULT_QUEUE") or any(t.options.queue == name for t in registered_tasks().values()):
        return True
    return Queue.objects.using(conf.get("DATABASE")).filter(name=name).exists()


#: What code declared when this process last synced its schedules (None: never synced).
_synced_declarations: dict[str, Any] | None = None
_sync_lock = threading.Lock()


def _sync_declared_schedules() -> None:
    """Bring the schedules declared in code into the database, as runworkers does at start-up.

    With pg_cron as the only worker no runworkers ever starts, so the run endpoint
    does it: on a process's first call, and again only when the declarations
    change. A declaration that cannot work is logged (``manage.py check`` names
    it too) and the jobs still run.
    """
    global _synced_declarations
    from .scheduling import declared_schedules, sync_declared

    with _sync_lock:
        try:
            declared = declared_schedules()
            if declared != _synced_declarations:
                sync_declared()
                _synced_declarations = declared
        except (ImproperlyConfigured, EnqueueError, InvalidSchedule, DatabaseError) as exc:
            logger.error("the run endpoint could not sync the schedules declared in code: %s", exc)


def run_jobs(queue: str, *, status: str, limit: int) -> list[dict[str, Any]]:
    """Run up to ``limit`` jobs of ``queue`` with a worker process that lives for this request.

    It is the runtime ``runworkers`` runs, so the jobs get the same leases
    (renewed), timeouts, life-cycle signals and outcome statements, and the
    process does its chores (expired leases, due schedules, pruning) on the
    way; it claims at most ``limit`` jobs, without LISTEN, on one claim
    connection, and stops once they are done. It runs on a thread of its own,
    so the request's database connection and transaction are left alone.
    """
    from .worker.connection import connect
    from .worker.process import WorkerProcess

    name = f"http:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    job_ids = None
    if status == "failed":
        # With none to retry, the worker still runs: it claims nothing, but does its chores.
        with connect(application_name="supaqueue run endpoint") as conn:
            job_ids = q.retry_failed(
                conn, queue=queue, limit=limit, worker_name=name, reason="run endpoint, status=failed"
            )
    worker = WorkerProcess(
        queues=[queue],
        concurrency=min(limit, 8),
        async_concurrency=0,  # a handful of jobs: HTTP calls on its threads, no event loop to start
        burst=True,
        name=name,
        max_jobs=limit,
        job_ids=job_ids,
        listen=False,
        claim_connections=1,
        report=True,
    )

    def work() -> None:
        try:
            _sync_declared_schedules()
        finally:
            worker.run(handle_signals=False)

    thread = threading.Thread(target=work, name="supaqueue-run")
    thread.start()
    thread.join()
    report = []
    for finished in worker.finished:
        job, outcome, retry = finished.job, finished.outcome, finished.retry
        entry: dict[str, Any] = {"id": job.id, "attempt": job.attempt}
        if isinstance(outcome, q.Success):
            entry["status"] = Job.Status.SUCCESSFUL.value
            entry["result"] = None if outcome.result is None else json.loads(outcome.result)
        else:
            entry["status"] = retry.status if retry else Job.Status.FAILED.value
            entry["error"] = f"{outcome.error_class}: {outcome.error_message}"
            if retry and retry.status == q.PENDING:
                entry["retry_at"] = retry.run_at.isoformat()
        report.append(entry)
    return report

"""HTTP queues: a job is one call to the queue's endpoint.

The queue row holds the base URL, method, headers, timeout and the *alias* of
a secret in ``SUPAQUEUE["HTTP_SECRETS"]``; a job holds only its payload, an
optional relative path and an optional method of its own (else the queue's, as
it is at the call). So a job can never choose the host it reaches, and a
secret never sits in a row; what a call stores or logs has the secret it sent
redacted, and a secret bound to hosts goes nowhere else (``django_supaqueue.secrets``). The URL,
header and path checks live in ``django_supaqueue.validators``, below the models that use them.

Response rules: 2xx is a success (status and size-capped body are the
result); 5xx, 408, 429, timeouts and connection errors are retried with
back-off (Retry-After honoured); other statuses fail for good unless the queue
retries client errors. Every call carries the job's identity
(``Idempotency-Key``, ``X-Supaqueue-Job-Id``, ``X-Supaqueue-Attempt``), so an
endpoint can do its work once however often a job's call reaches it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import httpx

from .. import conf, secrets
from ..exceptions import InvalidOption, InvalidPayload
from ..validators import check_path
from .calls import Call, CappedBody, Gate, NotSent

_client_lock = threading.Lock()
_shared: httpx.Client | None = None


# --------------------------------------------------------------------------
# Producer side
# --------------------------------------------------------------------------


def http_job_spec(
    queue: str,
    payload: Mapping[str, Any] | None = None,
    path: str | None = None,
    *,
    method: str | None = None,
    owner: Any = None,
    tenant_id: str | None = None,
    depends_on: Any = (),
    **options: Any,
) -> Any:
    """The JobSpec of one call to an HTTP queue, checked; ``producer.produce`` writes it.

    ``method`` None leaves the method to the queue, read when the call is made.
    """
    from ..models import Queue
    from ..queue import JobSpec, check_http_method, check_queue_name, check_tenant_id

    check_queue_name(queue)
    http_method = "" if method is None else check_http_method(method)
    payload = http_payload(payload)
    row = Queue.objects.using(conf.get("DATABASE")).filter(name=queue).values_list("http_url").first()
    if row is None or not row[0]:
        raise InvalidOption(
            f"queue {queue!r} is not an HTTP queue: create it with an HTTP URL (admin, or "
            "Queue.objects.create(name=..., http_url=...)) before enqueueing calls to it."
        )
    check_tenant_id(tenant_id)
    if options.get("key_mode") is None:
        options["key_mode"] = "dedupe"
    return JobSpec(
        task_name="",
        payload=payload,
        queue=queue,
        http_path=check_path(path),
        http_method=http_method,
        owner_id=getattr(owner, "pk", owner),
        tenant_id=tenant_id,
        depends_on=list(depends_on or ()),
        **options,
    )


def http_payload(payload: Mapping[str, Any] | None) -> dict[str, Any]:
    """A call's JSON body as the job keeps it: an object (a dict), refused before anything is written."""
    if payload is not None and not isinstance(payload, Mapping):
        raise InvalidPayload(f"payload must be a JSON object (a dict), not {type(payload).__name__}.")
    return dict(payload or {})


# --------------------------------------------------------------------------
# Worker side: perform one call
# --------------------------------------------------------------------------


def _client() -> httpx.Client:
    """One client per process, shared by the job threads (httpx clients are thread-safe), so
    connections to an endpoint are reused between jobs. Redirects are not followed: a response
    must not send a call to a host the queue does not name."""
    global _shared
    if _shared is None:
        with _client_lock:
            if _shared is None:
                secrets.redact_library_logs()
                _shared = httpx.Client(
                    follow_redirects=False,
                    trust_env=False,
                    limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
                )
    return _shared


class _Gate(Gate):
    """The Gate as httpcore's trace hook: ``*.send_request_headers.started`` comes once the
    connection is open or taken from the pool, and before anything is written."""

    def __call__(self, event: str, info: Mapping[str, Any]) -> None:
        if event in ("connection.connect_tcp.started", "connection.start_tls.started"):
            self.step_started()
        elif event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            self.step_done()
            if event == "connection.connect_tcp.complete":
                peer = info["return_value"].get_extra_info("server_addr")
                self.address = str(peer[0]) if peer else None
        elif event.endswith(".send_request_headers.started"):
            self.check()


def _read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    body = CappedBody(limit)
    for chunk in response.iter_bytes():
        if body.add(chunk):
            break
    return body.result()


def perform_http(job: Any) -> Any:
    """Make the call of one attempt on a job thread, with httpx, and judge its response (Call)."""
    call = Call(job)
    if call.refused is not None:
        return call.refused
    request: dict[str, Any] = {
        "headers": call.headers,
        "timeout": call.timeout,
        "extensions": {"trace": _Gate(job)},
    }
    if call.content is not None:
        request["content"] = call.content
    else:
        request["params"] = call.params
    try:
        with _client().stream(call.method, call.url, **request) as response:
            body, truncated = _read_capped(response, call.limit)
    except NotSent as exc:
        return call.not_sent(exc)
    except httpx.TimeoutException as exc:
        return call.timed_out("httpx." + type(exc).__name__)
    except httpx.TransportError as exc:
        return call.failure("httpx." + type(exc).__name__, str(exc) or type(exc).__name__)
    return call.answered(response.status_code, response.headers, body, truncated)

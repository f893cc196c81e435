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

import email.utils
import json
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from django.core.exceptions import ImproperlyConfigured

from .. import conf, secrets
from ..exceptions import InvalidOption, InvalidPayload
from ..secrets import Secret
from ..validators import check_path, check_secret_host, is_local_address

RETRYABLE_STATUSES = frozenset({408, 429})
_client_lock = threading.Lock()
_shared: httpx.Client | None = None


def build_url(base: str, path: str) -> str:
    path = check_path(path)
    if not path:
        return base
    return base.rstrip("/") + "/" + path


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
    if payload is not None and not isinstance(payload, Mapping):
        raise InvalidPayload(f"payload must be a JSON object (a dict), not {type(payload).__name__}.")
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
        payload=dict(payload or {}),
        queue=queue,
        http_path=check_path(path),
        http_method=http_method,
        owner_id=getattr(owner, "pk", owner),
        tenant_id=tenant_id,
        depends_on=list(depends_on or ()),
        **options,
    )


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


def _headers(job: Any, secret: Secret | None, has_body: bool) -> dict[str, str]:
    """The queue's headers, then the job's identity, then the secret's header.

    The identity lets an endpoint do its work once however often it is called:
    ``Idempotency-Key`` is the same on every attempt of a job, and
    ``X-Supaqueue-Attempt`` tells a retry from a first call.
    """
    config = job.http
    identity = {
        "Idempotency-Key": f"supaqueue-{job.id}",
        "X-Supaqueue-Job-Id": str(job.id),
        "X-Supaqueue-Attempt": str(job.attempt),
    }
    taken = {name.lower() for name in identity}
    headers = {
        str(k): str(v) for k, v in (config.get("headers") or {}).items() if str(k).lower() not in taken
    }
    headers.update(identity)
    if has_body:
        headers.setdefault("Content-Type", "application/json")
    if secret is not None:
        header = config.get("secret_header") or "Authorization"
        value = secret.value
        headers[header] = f"Bearer {value}" if header.lower() == "authorization" else value
    return headers


class _NotSent(Exception):
    """Raised by the gate to stop a call before its first byte; ``late`` when it is a rate slot missed."""

    def __init__(self, message: str, late: bool) -> None:
        super().__init__(message)
        self.late = late


class _Gate:
    """The last look at a call before its first byte is written: httpcore's trace hook.

    httpcore reports each step of a call here. ``*.send_request_headers.started`` comes once the
    client is built and the connection is open (TCP, then TLS) or taken from the pool, and before
    anything is written; what is refused there is never sent. Two things are: a rate-limited call
    this late after its claim, which could land in a window that later claims have filled (the
    time to build a client and connect counts too), and a connection that reached a loopback or
    link-local address when HTTP_REFUSE_LOCAL_HOSTS is on, whatever name led there. A pooled
    connection was opened, and so looked at, by an earlier call.

    The time this call spent opening a new connection (TCP, then TLS) is not counted as lateness:
    an endpoint that closes its connections after each response would otherwise make every call
    late on a loaded machine, and each put back, so none would ever be sent. The client's
    start-up, the wait for a slot and everything else before the first byte are counted.
    """

    def __init__(self, job: Any) -> None:
        rate_limited = bool((job.http or {}).get("rate_limited") and job.received)
        self.received = job.received if rate_limited else None
        self.allowed = float(conf.get("RATE_LIMIT_MARGIN")) / 2
        self.refuse_local = bool(conf.get("HTTP_REFUSE_LOCAL_HOSTS"))
        self.address: str | None = None
        self.connecting = 0.0  # seconds spent opening this call's connection
        self._step_started = 0.0

    def __call__(self, event: str, info: Mapping[str, Any]) -> None:
        if event in ("connection.connect_tcp.started", "connection.start_tls.started"):
            self._step_started = time.monotonic()
        elif event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            self.connecting += time.monotonic() - self._step_started
            if event == "connection.connect_tcp.complete":
                peer = info["return_value"].get_extra_info("server_addr")
                self.address = str(peer[0]) if peer else None
        elif event.endswith(".send_request_headers.started"):
            if self.refuse_local and self.address is not None and is_local_address(self.address):
                raise _NotSent(
                    f"not sent: the connection reached {self.address}, a loopback or link-local "
                    "address, which SUPAQUEUE['HTTP_REFUSE_LOCAL_HOSTS'] refuses",
                    late=False,
                )
            late = 0.0 if self.received is None else time.monotonic() - self.received - self.connecting
            if late > self.allowed:
                # Half the margin is for this wait; the other half covers the trip to the endpoint.
                raise _NotSent(
                    f"not sent: its connection was ready {late:.3f}s after its claim, more than half "
                    "of SUPAQUEUE['RATE_LIMIT_MARGIN']; it will be claimed again",
                    late=True,
                )


def _query(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    """GET payload as query parameters: scalars as text, lists repeated, objects as JSON."""
    params: list[tuple[str, str]] = []
    for name, value in payload.items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, bool):
                params.append((name, "true" if v else "false"))
            elif v is None:
                params.append((name, ""))
            elif isinstance(v, str | int | float):
                params.append((name, str(v)))
            else:
                params.append((name, json.dumps(v, separators=(",", ":"))))
    return params


def retry_after(value: str | None, now: datetime | None = None) -> datetime | None:
    """When a Retry-After header (seconds or an HTTP date) says to try again, capped to a day."""
    if not value:
        return None
    now = now or datetime.now(UTC)
    value = value.strip()
    try:
        at = now + timedelta(seconds=max(0.0, float(value)))
    except ValueError:
        try:
            at = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
    return min(max(at, now), now + timedelta(days=1))


def _read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    body = b"".join(chunks)
    return body[:limit], size > limit


def _body_text(body: bytes, truncated: bool, sent: tuple[str, ...]) -> str:
    """The body as text, with the secrets the call sent redacted (an endpoint may echo them)."""
    if truncated:
        body = secrets.drop_cut_secret(body, sent)
    return secrets.redact(body.decode("utf-8", errors="replace"), sent)


def _body_value(text: str, truncated: bool, content_type: str, sent: tuple[str, ...]) -> Any:
    if not truncated and "json" in content_type.lower():
        try:
            return secrets.redact_json(json.loads(text), sent)
        except ValueError:
            pass
    return text


def perform_http(job: Any) -> Any:
    """Make the call of one attempt and turn its response into a Success or a Failure.

    Every form of the secret the call sent is redacted from what it returns: the result, the error
    message and the log line.
    """
    from ..queue import Failure, Success

    config = job.http
    started = time.monotonic()
    method = config.get("method") or "POST"
    timeout = float(config.get("timeout") or conf.get("HTTP_TIMEOUT"))
    limit = int(conf.get("HTTP_MAX_RESPONSE_BYTES"))
    sent: tuple[str, ...] = ()

    def failure(
        error_class: str,
        message: str,
        *,
        status: int | None = None,
        final: bool = False,
        at: datetime | None = None,
        uncounted: bool = False,
    ):
        message = secrets.redact(message, sent)
        outcome = Failure(
            job_id=job.id,
            attempt=job.attempt,
            error_class=error_class,
            error_message=message,
            traceback="",
            duration=time.monotonic() - started,
            retry_at=at,
            final=final,
            http_status=status,
            uncounted=uncounted,
        )
        return outcome  # logged with its fate once written (worker/attempts.py)

    try:
        url = build_url(config["url"], config.get("path") or "")
        secret = secrets.get(config["secret"]) if config.get("secret") else None
        sent = (secret.value,) if secret is not None else ()
        check_secret_host(url, secret)  # the row may have been changed past its form
        has_body = method != "GET"
        headers = _headers(job, secret, has_body)
    except (InvalidOption, LookupError, ValueError, ImproperlyConfigured) as exc:
        return failure("django_supaqueue.exceptions.HTTPConfigError", str(exc), final=True)
    request: dict[str, Any] = {"headers": headers, "timeout": timeout, "extensions": {"trace": _Gate(job)}}
    if has_body:
        request["content"] = json.dumps(job.payload, separators=(",", ":")).encode()
    else:
        request["params"] = _query(job.payload)
    try:
        with _client().stream(method, url, **request) as response:
            body, truncated = _read_capped(response, limit)
    except _NotSent as exc:
        if not exc.late:
            return failure("django_supaqueue.exceptions.HTTPConfigError", str(exc), final=True)
        # The rate limit counted this call at its claim: give the slot back, pending again, uncounted.
        return failure(
            "django_supaqueue.exceptions.RateSlotMissed", str(exc), at=datetime.now(UTC), uncounted=True
        )
    except httpx.TimeoutException as exc:
        return failure("httpx." + type(exc).__name__, f"no response within {timeout}s")
    except httpx.TransportError as exc:
        return failure("httpx." + type(exc).__name__, str(exc) or type(exc).__name__)
    status = response.status_code
    text = _body_text(body, truncated, sent)
    if 200 <= status < 300:
        result = {
            "status": status,
            "body": _body_value(text, truncated, response.headers.get("content-type", ""), sent),
        }
        if truncated:
            result["truncated"] = True
        return Success(
            job_id=job.id,
            attempt=job.attempt,
            result=json.dumps(result, separators=(",", ":")),
            duration=time.monotonic() - started,
            http_status=status,
        )
    snippet = text[:500]
    message = f"{method} returned HTTP {status}" + (f": {snippet}" if snippet else "")
    if status >= 500 or status in RETRYABLE_STATUSES:
        at = retry_after(response.headers.get("retry-after")) if status in (429, 503) else None
        return failure("django_supaqueue.exceptions.HTTPError", message, status=status, at=at)
    final = not (400 <= status < 500 and config.get("retry_client_errors"))
    return failure("django_supaqueue.exceptions.HTTPError", message, status=status, final=final)

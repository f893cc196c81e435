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

from .. import conf, dbclock, secrets
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


class Gate:
    """The last look at a call before its first byte is written, whichever client makes it.

    The client reports when it starts and ends opening a connection (TCP, then TLS) and, once the
    connection is open or taken from the pool and before anything is written, calls ``check``;
    what is refused there is never sent. Two things are: a rate-limited call this late after its
    claim, which could land in a window that later claims have filled (the time to build a client
    and connect counts too), and a connection that reached a loopback or link-local address when
    HTTP_REFUSE_LOCAL_HOSTS is on, whatever name led there. A pooled connection was opened, and so
    looked at, by an earlier call.

    The time this call spent opening a new connection is not counted as lateness: an endpoint that
    closes its connections after each response would otherwise make every call late on a loaded
    machine, and each put back, so none would ever be sent. The client's start-up, the wait for a
    slot and everything else before the first byte are counted.
    """

    def __init__(self, job: Any) -> None:
        rate_limited = bool((job.http or {}).get("rate_limited") and job.received)
        self.received = job.received if rate_limited else None
        self.allowed = float(conf.get("RATE_LIMIT_MARGIN")) / 2
        self.refuse_local = bool(conf.get("HTTP_REFUSE_LOCAL_HOSTS"))
        self.address: str | None = None
        self.connecting = 0.0  # seconds spent opening this call's connection
        self._step_started = 0.0

    def step_started(self) -> None:
        self._step_started = time.monotonic()

    def step_done(self) -> None:
        self.connecting += time.monotonic() - self._step_started

    def check(self) -> None:
        """Raise _NotSent if the call must not be sent; the connection is ready, nothing written."""
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
    """When a Retry-After header (seconds or an HTTP date) says to try again, capped to a day.

    In seconds, it counts from now by the database's clock, which writes and compares run_at: a
    worker whose wall clock is minutes off would otherwise retry minutes early or late.
    """
    if not value:
        return None
    now = now or dbclock.now()
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


class Call:
    """One attempt's call, built from its job and its queue's row, and what its answer becomes.

    Shared by both clients (httpx on job threads, aiohttp on the async lane), so that a call is
    made, and its response judged, the same way on either. Every form of the secret the call sent
    is redacted from what it returns: the result, the error message and the log line.
    """

    def __init__(self, job: Any) -> None:
        config = job.http
        self.job = job
        self.started = time.monotonic()
        self.method: str = config.get("method") or "POST"
        self.timeout = float(config.get("timeout") or conf.get("HTTP_TIMEOUT"))
        self.limit = int(conf.get("HTTP_MAX_RESPONSE_BYTES"))
        self.sent: tuple[str, ...] = ()
        self.url = ""
        self.headers: dict[str, str] = {}
        self.content: bytes | None = None  # the JSON body; None for a GET, whose payload is the query
        self.params: list[tuple[str, str]] = []
        #: A Failure when the row's configuration forbids the call: returned without calling.
        self.refused: Any = None
        try:
            self.url = build_url(config["url"], config.get("path") or "")
            secret = secrets.get(config["secret"]) if config.get("secret") else None
            self.sent = (secret.value,) if secret is not None else ()
            check_secret_host(self.url, secret)  # the row may have been changed past its form
            has_body = self.method != "GET"
            self.headers = _headers(job, secret, has_body)
        except (InvalidOption, LookupError, ValueError, ImproperlyConfigured) as exc:
            self.refused = self.failure("django_supaqueue.exceptions.HTTPConfigError", str(exc), final=True)
            return
        if has_body:
            self.content = json.dumps(job.payload, separators=(",", ":")).encode()
        else:
            self.params = _query(job.payload)

    def failure(
        self,
        error_class: str,
        message: str,
        *,
        status: int | None = None,
        final: bool = False,
        at: datetime | None = None,
        uncounted: bool = False,
    ) -> Any:
        from ..queue import Failure

        return Failure(  # logged with its fate once written (worker/attempts.py)
            job_id=self.job.id,
            attempt=self.job.attempt,
            error_class=error_class,
            error_message=secrets.redact(message, self.sent),
            traceback="",
            duration=time.monotonic() - self.started,
            retry_at=at,
            final=final,
            http_status=status,
            uncounted=uncounted,
        )

    def not_sent(self, exc: _NotSent) -> Any:
        """The outcome of a call the gate stopped before its first byte."""
        if not exc.late:
            return self.failure("django_supaqueue.exceptions.HTTPConfigError", str(exc), final=True)
        # The rate limit counted this call at its claim: give the slot back, pending again, uncounted.
        return self.failure(
            "django_supaqueue.exceptions.RateSlotMissed", str(exc), at=dbclock.now(), uncounted=True
        )

    def timed_out(self, error_class: str) -> Any:
        return self.failure(error_class, f"no response within {self.timeout}s")

    def answered(self, status: int, headers: Mapping[str, str], body: bytes, truncated: bool) -> Any:
        """Turn a response (``headers`` looked up case-insensitively) into a Success or a Failure."""
        from ..queue import Success

        text = _body_text(body, truncated, self.sent)
        if 200 <= status < 300:
            result = {
                "status": status,
                "body": _body_value(text, truncated, headers.get("content-type", ""), self.sent),
            }
            if truncated:
                result["truncated"] = True
            return Success(
                job_id=self.job.id,
                attempt=self.job.attempt,
                result=json.dumps(result, separators=(",", ":")),
                duration=time.monotonic() - self.started,
                http_status=status,
            )
        snippet = text[:500]
        message = f"{self.method} returned HTTP {status}" + (f": {snippet}" if snippet else "")
        if status >= 500 or status in RETRYABLE_STATUSES:
            at = retry_after(headers.get("retry-after")) if status in (429, 503) else None
            return self.failure("django_supaqueue.exceptions.HTTPError", message, status=status, at=at)
        final = not (400 <= status < 500 and self.job.http.get("retry_client_errors"))
        return self.failure("django_supaqueue.exceptions.HTTPError", message, status=status, final=final)


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
    except _NotSent as exc:
        return call.not_sent(exc)
    except httpx.TimeoutException as exc:
        return call.timed_out("httpx." + type(exc).__name__)
    except httpx.TransportError as exc:
        return call.failure("httpx." + type(exc).__name__, str(exc) or type(exc).__name__)
    return call.answered(response.status_code, response.headers, body, truncated)

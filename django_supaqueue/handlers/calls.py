"""One attempt's HTTP call, whichever client makes it: its request, its gate, what its answer becomes.

The job threads' client (httpx, http.py) and the async lane's (aiohttp,
http_async.py) each send the bytes; everything else about a call is here, so
that a call is built, refused, read and judged the same way on either.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .. import conf, dbclock, secrets
from ..exceptions import InvalidOption
from ..secrets import Secret
from ..validators import check_path, check_secret_host, is_local_address

RETRYABLE_STATUSES = frozenset({408, 429})


def build_url(base: str, path: str) -> str:
    path = check_path(path)
    if not path:
        return base
    return base.rstrip("/") + "/" + path


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


class NotSent(Exception):
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
        """Raise NotSent if the call must not be sent; the connection is ready, nothing written."""
        if self.refuse_local and self.address is not None and is_local_address(self.address):
            raise NotSent(
                f"not sent: the connection reached {self.address}, a loopback or link-local "
                "address, which SUPAQUEUE['HTTP_REFUSE_LOCAL_HOSTS'] refuses",
                late=False,
            )
        late = 0.0 if self.received is None else time.monotonic() - self.received - self.connecting
        if late > self.allowed:
            # Half the margin is for this wait; the other half covers the trip to the endpoint.
            raise NotSent(
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


class CappedBody:
    """A response body read up to ``limit`` bytes (both clients feed it their chunks)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0

    def add(self, chunk: bytes) -> bool:
        """Take a chunk; True once past the limit, when reading should stop."""
        self.chunks.append(chunk)
        self.size += len(chunk)
        return self.size > self.limit

    def result(self) -> tuple[bytes, bool]:
        """The body, cut at the limit, and whether it was cut."""
        return b"".join(self.chunks)[: self.limit], self.size > self.limit


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

    def not_sent(self, exc: NotSent) -> Any:
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

"""HTTP queues on the worker's async lane: one call as a coroutine, with aiohttp.

A call on a job thread holds that thread until its answer comes, so a process
has at most its thread slots in flight; on the event loop of the async lane
(worker/aio.py) a call waiting for its answer costs a coroutine, and hundreds
are in flight at once. aiohttp was chosen by measurement: with hundreds of
calls in flight, its ClientSession came close to a bare asyncio client, where
httpx.AsyncClient's pool let only a handful of calls through at a time.

What a call is and what its answer becomes are calls.Call's, shared with the
threads' httpx path: only the transport differs. The Gate (rate-limit
lateness, HTTP_REFUSE_LOCAL_HOSTS) is applied by the connector once a
connection is ready and before the request is written, so a refused call
never reaches its endpoint.
"""

from __future__ import annotations

import contextvars
from typing import Any

import aiohttp

from .. import secrets
from .calls import Call, CappedBody, Gate, NotSent

#: The gate of the call the current task makes: the connector reads it (each call is its own task).
_gate: contextvars.ContextVar[Gate | None] = contextvars.ContextVar("supaqueue_http_gate", default=None)


class _GatedConnector(aiohttp.TCPConnector):
    """A connector that shows each ready connection to the call's Gate before anything is written.

    A refused connection is closed rather than pooled: it was opened for a call that must not go.
    """

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        conn = await super().connect(req, traces, timeout)
        gate = _gate.get()
        if gate is not None:
            transport = conn.transport
            peer = transport.get_extra_info("peername") if transport is not None else None
            gate.address = str(peer[0]) if peer else None
            try:
                gate.check()
            except NotSent:
                conn.close()
                raise
        return conn


async def _connection_create_start(session: Any, ctx: Any, params: Any) -> None:
    gate = _gate.get()
    if gate is not None:
        gate.step_started()


async def _connection_create_end(session: Any, ctx: Any, params: Any) -> None:
    gate = _gate.get()
    if gate is not None:
        gate.step_done()


def new_session(limit: int) -> aiohttp.ClientSession:
    """The process's session for the async lane: call on its event loop, close at shutdown.

    ``limit`` connections at most (the lane's slots), none per host below it. Redirects are
    never followed (see each request), the environment's proxies are not used, and the client's
    log records have secrets redacted as httpx's have.
    """
    secrets.redact_library_logs()
    trace = aiohttp.TraceConfig()
    trace.on_connection_create_start.append(_connection_create_start)
    trace.on_connection_create_end.append(_connection_create_end)
    return aiohttp.ClientSession(
        connector=_GatedConnector(limit=max(1, limit), limit_per_host=0),
        trace_configs=[trace],
        trust_env=False,
    )


async def perform_http_async(job: Any, session: aiohttp.ClientSession) -> Any:
    """Make the call of one attempt on the event loop and judge its response (calls.Call)."""
    call = Call(job)
    if call.refused is not None:
        return call.refused
    _gate.set(Gate(job))
    timeout = aiohttp.ClientTimeout(total=None, connect=call.timeout, sock_read=call.timeout)
    request: dict[str, Any] = {
        "headers": call.headers,
        "timeout": timeout,
        "allow_redirects": False,
    }
    if call.content is not None:
        request["data"] = call.content
    else:
        request["params"] = call.params
    try:
        async with session.request(call.method, call.url, **request) as response:
            body, truncated = await _read_capped(response, call.limit)
            status, headers = response.status, response.headers
    except NotSent as exc:
        return call.not_sent(exc)
    except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors too
        return call.timed_out(_qualname(exc))
    except aiohttp.ClientError as exc:
        return call.failure(_qualname(exc), str(exc) or type(exc).__name__)
    return call.answered(status, headers, body, truncated)


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    body = CappedBody(limit)
    async for chunk in response.content.iter_chunked(65536):
        if body.add(chunk):
            break
    return body.result()


def _qualname(exc: BaseException) -> str:
    cls = type(exc)
    module = "aiohttp" if cls.__module__.startswith("aiohttp") else cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"

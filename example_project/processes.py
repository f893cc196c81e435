"""The run command's child processes: ``manage.py`` commands that outlive no Ctrl-C.

Each child runs in its own session, so a Ctrl-C in the terminal reaches the
run command alone, which then stops every child exactly once and waits for it
before it stops the database.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Seconds a stopped child may take to finish its running jobs before it is killed.
STOP_GRACE = 30.0


class ChildFailed(RuntimeError):
    """A child process could not do its part (exited early, never answered)."""


def start_manage(*args: str, env: dict[str, str]) -> subprocess.Popen:
    """Start ``manage.py <args>`` with this interpreter, in its own session."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        start_new_session=True,
    )


def wait_until_answering(child: subprocess.Popen, url: str, timeout: float) -> None:
    """Return once ``url`` answers with any HTTP response; raise if ``child`` exits or time runs out.

    Any status counts, an error page too: the question is only whether the
    server listens and answers yet.
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    deadline = time.monotonic() + timeout
    while True:
        if child.poll() is not None:
            raise ChildFailed(f"the web server exited with status {child.returncode} before it answered")
        try:
            opener.open(url, timeout=1.0).close()
            return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise ChildFailed(f"the web server did not answer {url} within {timeout:.0f}s") from None
            time.sleep(0.2)


@contextlib.contextmanager
def stopped_at_exit(child: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """Stop ``child`` however the block ends; a second Ctrl-C meanwhile cannot cut the stop short."""
    try:
        yield child
    except BaseException:
        ignore_interrupts()
        raise
    finally:
        stop([child])


def watch(children: list[subprocess.Popen], tick: Callable[[], None], *, until_any: bool = False) -> int:
    """Call ``tick`` every second until all children (or, with ``until_any``, one) exited.

    Returns the worst exit status. Whatever ends the wait (a child exiting,
    Ctrl-C, an error), the children still running are stopped first, so none
    outlives the run command.
    """
    try:
        while True:
            ended = [child for child in children if child.poll() is not None]
            if ended and (until_any or len(ended) == len(children)):
                break
            tick()
            time.sleep(1.0)
    except BaseException:
        ignore_interrupts()
        print("\nstopping (running jobs finish first)", flush=True)
        raise
    finally:
        stop(children)
    return max(abs(child.returncode) for child in children)


def stop(children: Iterable[subprocess.Popen]) -> None:
    """SIGTERM each running child (workers finish their jobs first), then kill any that lags.

    Not SIGINT: a child started from a shell that ignores SIGINT (a background
    job) inherits that, and runserver would never stop.
    """
    running = [child for child in children if child.poll() is None]
    for child in running:
        _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    for child in running:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(child, signal.SIGKILL)
            child.wait()


def _signal_group(child: subprocess.Popen, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, sig)


def raise_interrupt(signum: int, frame: object) -> None:
    """SIGTERM and SIGHUP stop the run the way Ctrl-C does; SIGINT too, even if inherited as ignored."""
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, raise_interrupt)


def ignore_interrupts() -> None:
    """While shutting down, a second Ctrl-C must not abandon a child or the database."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def free_port(preferred: int) -> int:
    """``preferred`` when nothing listens there, otherwise any free port.

    The probe binds as runserver does (SO_REUSEADDR), so connections of an
    earlier run still closing on the port (TIME_WAIT) do not push a re-run elsewhere.
    """
    for port in (preferred, 0):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError("no free TCP port")

"""Job slots that run attempts in a child process, for queues in "processes" mode.

A thread slot can only ask a stuck task to stop; a child process can be
killed. Each slot keeps one child alive between jobs (Django is set up once per
child, not once per job) and starts a new one after a kill or a crash.

This module imports no models at import time: the child unpickles
``_serve`` before Django is set up.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from typing import Any

#: What a child sends when an attempt's body starts: the timeout counts from there.
STARTED = "started"


def _serve(settings_module: str, conn: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    import django

    django.setup()
    from django.db import connections

    from .executor import perform

    while True:
        try:
            job = conn.recv()
        except EOFError:
            connections.close_all()  # kept open between jobs (see job_connections.py)
            return
        conn.send(STARTED)
        conn.send(perform(job))


class ChildProcess:
    """One child that runs jobs sent over a pipe; ``kill()`` stops the current one for good."""

    def __init__(self) -> None:
        from django.conf import settings

        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(
            target=_serve, args=(settings.SETTINGS_MODULE, child_conn), name="supaqueue-job", daemon=True
        )
        self.process.start()
        child_conn.close()
        self.killed = False

    def run(self, job: Any, body_started: Callable[[], None]) -> Any:
        """Send ``job`` and wait for its outcome; raises EOFError if the child died.

        ``body_started`` is called when the child begins the attempt, after
        any start-up (a new child sets Django up first).
        """
        self._conn.send(job)
        while (message := self._conn.recv()) == STARTED:
            body_started()
        return message

    def kill(self) -> None:
        self.killed = True
        if self.process.is_alive():
            self.process.kill()

    def close(self) -> None:
        self._conn.close()
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()

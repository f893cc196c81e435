"""LISTEN for new jobs and cancellations, and wake the claim loop.

The insert trigger sends ``"<queue> <epoch>"`` on the channel once per queue
per statement: epoch 0 means runnable now, otherwise the earliest future
run_at, which the loop keeps as a timer so delayed jobs start on time without
polling. Cancellations of running attempts arrive as "<job id> <attempt>" on
a second channel.

By default the claim loop listens on its own connection and waits on that
socket (see Wakeup): a notification then wakes the loop directly, and the
claim goes to the server process that has just delivered it. Each extra hop
(a listener thread, a second server process) cost an idle worker about a
tenth of a millisecond of pick-up time on a small machine. When LISTEN needs a
connection of its own (LISTEN_DATABASE, e.g. behind PgBouncer in transaction
mode), a Listener thread holds it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections.abc import Callable

import psycopg
from psycopg import sql

from .. import conf, dbclock
from ..queue import CANCEL_CHANNEL, CHANNEL
from .connection import connect

logger = logging.getLogger("django_supaqueue.worker")


def listen(conn: psycopg.Connection) -> None:
    """Subscribe ``conn`` to new jobs and to cancellations."""
    for channel in (CHANNEL, CANCEL_CHANNEL):
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))


def listens_on_claim_connection() -> bool:
    """Whether the claim loop's own connection can LISTEN (no separate LISTEN_DATABASE)."""
    alias = conf.get("LISTEN_DATABASE")
    return bool(conf.get("LISTEN")) and alias in (None, conf.get("DATABASE"))


class Notifications:
    """Routes notifications: ``on_jobs(due_epoch, queue)`` for a served queue, and
    ``on_cancel(job_id, attempt)``."""

    def __init__(
        self,
        queues: set[str] | None,
        on_jobs: Callable[[float, str], None],
        on_cancel: Callable[[int, int], None],
    ) -> None:
        self.queues = queues
        self.on_jobs = on_jobs
        self.on_cancel = on_cancel

    def dispatch(self, note: psycopg.Notify) -> None:
        if note.channel == CANCEL_CHANNEL:
            job_id, _, attempt = note.payload.partition(" ")
            if job_id.isdigit() and attempt.isdigit():
                self.on_cancel(int(job_id), int(attempt))
            return
        queue, _, due = note.payload.rpartition(" ")
        if self.queues is not None and queue not in self.queues:
            return
        try:
            epoch = float(due)
        except ValueError:
            epoch = 0.0
        self.on_jobs(epoch if epoch > dbclock.time() else 0.0, queue)  # the epoch is the database's

    def drain(self, conn: psycopg.Connection) -> None:
        """Dispatch what ``conn`` has received (during queries, or waiting on the socket) without blocking."""
        for note in conn.notifies(timeout=0):
            self.dispatch(note)


class Wakeup:
    """A threading.Event that the claim loop can wait on together with its connection's socket.

    Other threads set it (a job finished, a stop, a notification through a
    Listener thread); a byte in a pipe makes a waiting select() return.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._set = False
        self._closed = False
        self._lock = threading.Lock()  # a late set() from a job thread never writes to a closed pipe

    def set(self) -> None:
        if self._set:
            return
        with self._lock:
            self._set = True
            if self._closed:
                return
            with contextlib.suppress(BlockingIOError):  # full of wake-ups already
                os.write(self._write, b"!")

    def clear(self) -> None:
        self._set = False
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 512):
                pass

    def wait(self, timeout: float, sock: int | None = None) -> bool:
        """Sleep until set, ``sock`` is readable, or ``timeout``; True when ``sock`` is readable."""
        if self._set:
            return False
        fds = [self._read] if sock is None else [self._read, sock]
        readable, _, _ = select.select(fds, [], [], max(0.0, timeout))
        return sock is not None and sock in readable

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._read)
                os.close(self._write)


class Listener(threading.Thread):
    """Holds a LISTEN connection of its own (LISTEN_DATABASE) and routes what arrives."""

    def __init__(self, notifications: Notifications, on_reconnect: Callable[[], None]) -> None:
        super().__init__(name="supaqueue-listener", daemon=True)
        self.notifications = notifications
        self.on_reconnect = on_reconnect
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._conn: psycopg.Connection | None = None

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                self._listen()
                delay = 0.5
            except psycopg.Error as exc:
                if self._stop.is_set():
                    break
                logger.warning("listener connection lost (%s); reconnecting in %.1fs", exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)
            finally:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

    def _listen(self) -> None:
        self._conn = connect(application_name="supaqueue listener", alias=conf.get("LISTEN_DATABASE"))
        listen(self._conn)
        if self.ready.is_set():
            self.on_reconnect()  # notifications may have been missed while we were away
        self.ready.set()
        while not self._stop.is_set():
            for note in self._conn.notifies(timeout=1.0):
                self.notifications.dispatch(note)

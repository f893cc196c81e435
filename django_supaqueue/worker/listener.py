"""LISTEN for new jobs and cancellations on a connection of its own, and wake the claim loop.

The insert trigger sends ``"<queue> <epoch>"`` on the channel once per queue
per statement: epoch 0 means runnable now, otherwise the earliest future
run_at, which the loop keeps as a timer so delayed jobs start on time without
polling. Cancellations of running attempts arrive as "<job id> <attempt>" on
a second channel.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg
from psycopg import sql

from .. import conf
from ..queue import CANCEL_CHANNEL, CHANNEL
from .connection import connect

logger = logging.getLogger("django_supaqueue.worker")


class Listener(threading.Thread):
    """Calls ``on_jobs(due_epoch)`` for each notification about a served queue,
    and ``on_cancel(job_id, attempt)`` for each cancelled attempt."""

    def __init__(
        self,
        queues: set[str] | None,
        on_jobs: Callable[[float], None],
        on_cancel: Callable[[int, int], None],
        on_reconnect: Callable[[], None],
    ) -> None:
        super().__init__(name="supaqueue-listener", daemon=True)
        self.on_cancel = on_cancel
        self.queues = queues
        self.on_jobs = on_jobs
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
        for channel in (CHANNEL, CANCEL_CHANNEL):
            self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        if self.ready.is_set():
            self.on_reconnect()  # notifications may have been missed while we were away
        self.ready.set()
        while not self._stop.is_set():
            for note in self._conn.notifies(timeout=1.0):
                if note.channel == CANCEL_CHANNEL:
                    self._handle_cancel(note.payload)
                else:
                    self._handle(note.payload)

    def _handle_cancel(self, payload: str) -> None:
        job_id, _, attempt = payload.partition(" ")
        if job_id.isdigit() and attempt.isdigit():
            self.on_cancel(int(job_id), int(attempt))

    def _handle(self, payload: str) -> None:
        queue, _, due = payload.rpartition(" ")
        if self.queues is not None and queue not in self.queues:
            return
        try:
            epoch = float(due)
        except ValueError:
            epoch = 0.0
        self.on_jobs(epoch if epoch > time.time() else 0.0)

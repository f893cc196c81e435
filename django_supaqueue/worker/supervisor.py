"""Run one worker in this process, or several in child processes and watch them.

This module imports no models at import time: spawned children unpickle
``_child_main`` before Django is set up.

Children are spawned (not forked) so that no thread or connection of the
parent leaks into them, and each sits in its own process group: Ctrl-C reaches
the supervisor alone, which forwards exactly one SIGTERM to each child.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from typing import Any

from django.conf import settings

from .console import Console

logger = logging.getLogger("django_supaqueue.worker")


def run_workers(*, processes: int = 1, console: Console | None = None, **worker_options: Any) -> int:
    """Run until stopped; returns the exit status for the command.

    ``console``: the logging the command set up in this process, to set up in
    each spawned one too (None: the project's LOGGING decides there as well).
    """
    if processes <= 1:
        from .process import WorkerProcess

        worker = WorkerProcess(**worker_options)
        worker.run()
        _exit_if_left_behind(worker)
        return worker.exit_code
    return _Supervisor(processes, worker_options, console).run()


def _exit_if_left_behind(worker: Any) -> None:
    """End the process now if job threads would not stop: only its exit ends them.

    The worker has handed their jobs over on the understanding that the
    process exits at once (see running.hand_over); a normal interpreter
    shutdown could let such a thread run on for a while.
    """
    if worker.left_behind:
        logging.shutdown()
        os._exit(worker.exit_code)


def _child_main(
    settings_module: str, worker_options: dict[str, Any], parent_pid: int, console: Console | None
) -> None:
    os.setpgrp()
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    import django

    django.setup()
    if console is not None:
        console.install()
    from .process import WorkerProcess  # only now: models need the app registry

    worker = WorkerProcess(**worker_options, parent_pid=parent_pid)
    worker.run()
    _exit_if_left_behind(worker)
    if worker.exit_code:
        raise SystemExit(worker.exit_code)


class _Supervisor:
    def __init__(self, processes: int, worker_options: dict[str, Any], console: Console | None) -> None:
        self.processes = processes
        self.options = worker_options
        self.console = console
        self.burst = bool(worker_options.get("burst"))
        self.stopping = False
        self.ctx = multiprocessing.get_context("spawn")
        self.children: list[multiprocessing.process.BaseProcess] = []

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        from django.db import connections

        connections.close_all()
        self.children = [self._start(i) for i in range(self.processes)]
        failed = False
        while True:
            for i, child in enumerate(self.children):
                if child.is_alive() or child.exitcode is None:
                    continue
                if child.exitcode != 0:
                    failed = True
                if not (self.stopping or self.burst):
                    logger.warning(
                        "worker process %s exited with %s; starting another", child.pid, child.exitcode
                    )
                    time.sleep(1.0)
                    self.children[i] = self._start(i)
            if all(not c.is_alive() for c in self.children):
                break
            time.sleep(0.2)
        logger.info("supervisor: all %s worker processes stopped", len(self.children))
        return 1 if failed and self.burst else 0

    def _start(self, index: int) -> multiprocessing.process.BaseProcess:
        options = dict(self.options)
        if options.get("metrics_port") is not None:
            options["metrics_port"] += index  # one scrape target per child
        child = self.ctx.Process(
            target=_child_main,
            name="supaqueue-worker",
            args=(settings.SETTINGS_MODULE, options, os.getpid(), self.console),
        )
        child.start()
        return child

    def _on_signal(self, signum: int, frame: object) -> None:
        """First signal: children finish their jobs. Second: they release them and stop now."""
        what = "now" if self.stopping else "after their running jobs"
        self.stopping = True
        logger.info(
            "supervisor: %s received, stopping %s worker processes %s",
            signal.Signals(signum).name,
            len(self.children),
            what,
        )
        for child in self.children:
            if child.pid and child.is_alive():
                os.kill(child.pid, signal.SIGTERM)

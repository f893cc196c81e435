"""What ``runworkers`` prints when the project has not said where the queue's logs go.

A worker that says nothing looks like a worker that does nothing. Celery and
Procrastinate workers print a start line, their jobs and their stop out of the
box; so does ``runworkers``: when no handler would receive the
``django_supaqueue`` logger's records (no LOGGING setting for it, nor for the
root logger), it attaches one to stderr, at the level Django's ``-v`` asks for.
A project that configured logging keeps its own handlers, levels and format.

The same console is set up again in each process ``runworkers -p N`` spawns,
since a spawned process starts with Django's logging configuration only.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import sys
from typing import Literal

#: The logger every record of the package descends from.
PACKAGE_LOGGER = "django_supaqueue"
#: One record per finished attempt (see attempts.py): shown from -v 2 on.
ATTEMPTS_LOGGER = "django_supaqueue.worker.attempts"

TEXT_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

#: The attributes every LogRecord has; the others are a call's ``extra`` fields.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


@dataclasses.dataclass(frozen=True)
class Console:
    """Django's ``-v`` (0: warnings, 1: start, stop and failures, 2: every attempt, 3: debug) and a format.

    Frozen and plain so that it pickles into the processes the supervisor spawns.
    """

    verbosity: int = 1
    format: Literal["text", "json"] = "text"

    def install(self) -> bool:
        """Attach the console unless the project's logging already handles the package; True if attached."""
        package = logging.getLogger(PACKAGE_LOGGER)
        if package.hasHandlers():
            return False
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            JsonFormatter() if self.format == "json" else logging.Formatter(TEXT_FORMAT, DATE_FORMAT)
        )
        package.addHandler(handler)
        package.setLevel(
            {0: logging.WARNING, 1: logging.INFO, 2: logging.INFO}.get(self.verbosity, logging.DEBUG)
        )
        # Below -v 2 the attempts logger is off for successes, so the hot path never formats one.
        logging.getLogger(ATTEMPTS_LOGGER).setLevel(logging.WARNING if self.verbosity < 2 else logging.NOTSET)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's ``extra`` fields.

    Log collectors (Loki, CloudWatch, Datadog) index such fields without a
    parsing rule: a job's lines are found by ``job_id``, slow ones by ``duration``.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created)
            .astimezone()
            .isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        entry.update((k, v) for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)

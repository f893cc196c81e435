"""The queue's vocabulary for Python code: table names, channels, job statuses, and its database.

The .sql files spell table names and statuses literally; tests/test_queue_sql.py
checks them against the models these names come from.
"""

from __future__ import annotations

from .. import conf
from ..constants import CANCEL_CHANNEL, CHANNEL  # noqa: F401  (the queue's vocabulary)
from ..models import (
    CurrentJob,
    Job,
    JobDependency,
    JobEvent,
    Queue,
    QueueCall,
    Worker,
)

QUEUE = Queue._meta.db_table
JOB = Job._meta.db_table
CURRENT = CurrentJob._meta.db_table
EVENT = JobEvent._meta.db_table
DEPENDENCY = JobDependency._meta.db_table
WORKER = Worker._meta.db_table
CALL = QueueCall._meta.db_table


PENDING = Job.Status.PENDING.value
WAITING = Job.Status.WAITING.value
FAILED = Job.Status.FAILED.value
SUCCESSFUL = Job.Status.SUCCESSFUL.value
CANCELLED = Job.Status.CANCELLED.value
IN_PROGRESS = Job.Status.IN_PROGRESS.value


def db_alias() -> str:
    """The entry of settings.DATABASES that holds the queue's tables (SUPAQUEUE['DATABASE'])."""
    return conf.get("DATABASE")

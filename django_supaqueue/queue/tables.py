"""Table names, notification channels and job statuses: the vocabulary of the SQL."""

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

#: The event of an attempt that ended after its job was cancelled (its lease kept until then).
STOPPED = JobEvent.Kind.STOPPED.value

#: The conflict target of every job insert: the partial unique index of keys held by
#: jobs not started yet (waiting or pending), which a new job with the same key meets.
ON_PENDING_KEY = f"ON CONFLICT (key) WHERE status IN ('{WAITING}', '{PENDING}') AND key IS NOT NULL"


def _db_alias() -> str:
    return conf.get("DATABASE")

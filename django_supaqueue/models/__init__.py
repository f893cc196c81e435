"""The queue's tables: Queue, Worker, Job, CurrentJob, JobEvent, Schedule and ScheduleTick.

They mirror the seeds' queue / worker / job / current_job tables. The models
hold data and constraints only; every statement that moves a job through its
life cycle lives in ``django_supaqueue.queue``. One module per concern; every
public name is importable from here, as it was when this was one module.
"""

from .job import Dashboard, Job, JobDependency, JobEvent
from .queue import PRIORITY_MAX, PRIORITY_MIN, Queue, QueueCall, queue_name_validator
from .schedule import ALREADY_SCHEDULED, Schedule, ScheduleTick, default_timezone
from .worker import CurrentJob, Worker

__all__ = [
    "ALREADY_SCHEDULED",
    "PRIORITY_MAX",
    "PRIORITY_MIN",
    "CurrentJob",
    "Dashboard",
    "Job",
    "JobDependency",
    "JobEvent",
    "Queue",
    "QueueCall",
    "Schedule",
    "ScheduleTick",
    "Worker",
    "default_timezone",
    "queue_name_validator",
]

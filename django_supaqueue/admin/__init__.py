"""Admin screens for the queue: jobs, queues, schedules, workers, leases and a live dashboard.

One module per screen, and the jobs' operator actions in ``job_actions``. Jobs
change state only through the ``queue`` package's operations (those actions);
queues are edited with a form; workers and leases are read-only; every figure
is bounded or estimated, so the screens stay fast with millions of jobs (see
``changelist`` and ``..stats``).
"""

from . import dashboard, jobs, queues, schedules, workers

__all__ = ["dashboard", "jobs", "queues", "schedules", "workers"]

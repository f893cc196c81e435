"""The queue's SQL: every statement that moves a job through its life cycle, and nothing else.

One package, one module per stage, each short enough to read in one sitting.
A module that runs statements keeps them, whole and named, in the .sql file of
the same name (``claims.sql`` beside ``claims.py``), read once at import by
``queries``; it alone runs them. Each module imports only modules above it in
this list:

- ``queries``: reading the .sql files;
- ``tables``: table names, channels, statuses, for Python code;
- ``storable``: what PostgreSQL can store (text, JSON, numbers), checked before a write;
- ``spec``: an enqueue call's options, checked (``JobSpec``);
- ``rows``: job rows as the enqueue statements write and read them;
- ``claims``: the claim, which takes jobs and leases them;
- ``leases``: worker registration, heartbeats, lease expiry;
- ``outcomes``: success, failure and retry, release, recovery of expired leases,
  and the worker's round trip (finish, then claim);
- ``actions``: cancel and the operators' actions (reschedule among them), pruning;
- ``graph``: writing jobs with dependencies (settling them is ``outcomes``' part);
- ``prepared``: statements bound on the server (and prepared) on Django's connection;
- ``enqueue``: writing jobs (``enqueue_job``, ``enqueue_jobs``), keys and key modes;
- ``triggers``: the opt-in database trigger that enqueues row changes.

The producer side runs on Django's connection (so a job commits or rolls back
with the caller's data); the worker side runs on a plain psycopg connection the
worker owns, passed in as ``conn``. Each worker-side function is one statement
(a CTE chain), so that a batch of jobs costs one round trip whatever its size,
and so that the lease fence (job, attempt, worker) is checked in the same
statement that writes the outcome.

Nothing here knows about HTTP, the admin or signals; nothing outside this
package writes queue SQL. The names below are the ones the rest of the app uses.
"""

from __future__ import annotations

from .actions import (
    cancel,
    delete,
    hold,
    pause_queues,
    prune,
    release_hold,
    reschedule,
    resume_queues,
    retry_failed,
    retry_now,
    run_now,
    wake_queues,
)
from .claims import ClaimedJob, claim, loop_work
from .enqueue import (
    enqueue_batch,
    enqueue_job,
    enqueue_jobs,
    ensure_queues,
)
from .leases import (
    Beat,
    expire_leases,
    heartbeat,
    note_blocked,
    register_worker,
    unregister_worker,
)
from .outcomes import (
    Failure,
    Retry,
    Success,
    complete,
    fail,
    finish_and_claim,
    notify_queues,
    recover_expired,
    release,
    retry_delay_bounds,
    storable,
)
from .spec import (
    DEPENDENCY_POLICIES,
    KEY_MODES,
    JobSpec,
    check_http_method,
    check_key,
    check_max_attempts,
    check_priority,
    check_queue_name,
    check_run_at,
    check_serial_group,
    check_tenant_id,
    encode_json,
)
from .tables import (
    CALL,
    CANCEL_CHANNEL,
    CANCELLED,
    CHANNEL,
    CURRENT,
    DEPENDENCY,
    EVENT,
    FAILED,
    IN_PROGRESS,
    JOB,
    PENDING,
    QUEUE,
    SUCCESSFUL,
    WAITING,
    WORKER,
)
from .triggers import (
    ROW_TRIGGER_FUNCTION,
    TRIGGER_EVENTS,
    RowTrigger,
    drop_row_trigger,
    install_row_trigger,
)

__all__ = [
    "CALL",
    "CANCELLED",
    "CANCEL_CHANNEL",
    "CHANNEL",
    "CURRENT",
    "DEPENDENCY",
    "EVENT",
    "FAILED",
    "IN_PROGRESS",
    "JOB",
    "PENDING",
    "QUEUE",
    "SUCCESSFUL",
    "WAITING",
    "WORKER",
    "DEPENDENCY_POLICIES",
    "JobSpec",
    "KEY_MODES",
    "check_http_method",
    "check_key",
    "check_max_attempts",
    "check_priority",
    "check_queue_name",
    "check_run_at",
    "check_serial_group",
    "check_tenant_id",
    "encode_json",
    "enqueue_batch",
    "enqueue_job",
    "enqueue_jobs",
    "ensure_queues",
    "ROW_TRIGGER_FUNCTION",
    "RowTrigger",
    "TRIGGER_EVENTS",
    "drop_row_trigger",
    "install_row_trigger",
    "ClaimedJob",
    "claim",
    "loop_work",
    "heartbeat",
    "expire_leases",
    "note_blocked",
    "Beat",
    "register_worker",
    "unregister_worker",
    "Failure",
    "Retry",
    "Success",
    "complete",
    "fail",
    "finish_and_claim",
    "notify_queues",
    "recover_expired",
    "release",
    "retry_delay_bounds",
    "storable",
    "cancel",
    "delete",
    "hold",
    "pause_queues",
    "prune",
    "release_hold",
    "reschedule",
    "resume_queues",
    "retry_failed",
    "retry_now",
    "run_now",
    "wake_queues",
]

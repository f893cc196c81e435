"""The attempt cycle: claim, perform, record, announce. Every runner of jobs goes through it.

Three callers run jobs: the worker runtime (``runworkers``, ``testing.run_worker``,
and the run endpoint, which runs a worker process for the length of a request),
and ``testing.run_pending``, which runs jobs in a test's own thread and
transaction. They share this module's steps, so a job sends the same life-cycle
signals and is written by the same statements whichever runs it. The runtime
sends the record of one batch and the next claim in one round trip
(``queue.finish_and_claim``); the others call ``claim`` and ``record`` here.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Sequence
from typing import Any

from .. import queue as q
from .. import signals
from ..queue import ClaimedJob, Failure, Retry, Success

Outcome = Success | Failure

#: A line per finished attempt, written once its outcome is: successes at INFO,
#: a failure that will be retried at WARNING, one that failed for good at ERROR.
log = logging.getLogger("django_supaqueue.worker.attempts")


@dataclasses.dataclass(frozen=True, slots=True)
class Finished:
    """An attempt as it was written: what a runner reports (the run endpoint's answer)."""

    job: ClaimedJob
    outcome: Outcome
    retry: Retry | None  # a failure's fate (pending again at run_at, or failed); None for a success
    written: bool = True  # False: fenced out (its lease was gone), nothing was written


def describe(job: ClaimedJob) -> dict[str, object]:
    """The keyword arguments every life-cycle signal about an attempt carries."""
    return {"job_id": job.id, "queue": job.queue, "task_name": job.task_name, "attempt": job.attempt}


def announce_started(jobs: Sequence[ClaimedJob]) -> None:
    """``job_started`` for attempts just claimed."""
    if signals.job_started.receivers:
        for job in jobs:
            signals.send(signals.job_started, **describe(job), wait=job.wait)


def announce_recorded(
    jobs: dict[tuple[int, int], ClaimedJob],
    successes: Sequence[Success],
    failures: Sequence[Failure],
    retries: Sequence[Retry],
    completed: set[int] | None = None,
) -> list[Finished]:
    """Send the life-cycle signals for outcomes just written, and say what became of each attempt.

    ``jobs`` maps (job id, attempt) to the claimed job; ``retries`` are what
    the failure statement returned (a fenced failure has none); ``completed``
    the job ids the success statement wrote (None: all of them).
    """
    finished: list[Finished] = []
    announce = bool(
        signals.job_succeeded.receivers or signals.job_retried.receivers or signals.job_failed.receivers
    )
    for s in successes:
        job = jobs.get((s.job_id, s.attempt))
        if job is None:
            continue
        written = completed is None or s.job_id in completed
        finished.append(Finished(job, s, None, written))
        if announce and written:
            signals.send(signals.job_succeeded, **describe(job), duration=s.duration)
    status = {r.job_id: r for r in retries}
    for f in failures:
        job, r = jobs.get((f.job_id, f.attempt)), status.get(f.job_id)
        if job is None:
            continue
        finished.append(Finished(job, f, r, r is not None))
        if not announce or r is None:
            continue  # fenced (the lease was gone), or the job was cancelled meanwhile: nothing to say
        signal = signals.job_retried if r.status == q.PENDING else signals.job_failed
        signals.send(
            signal,
            **describe(job),
            duration=f.duration,
            error_class=f.error_class,
            error_message=f.error_message,
            retry_at=r.run_at if r.status == q.PENDING else None,
        )
    log_finished(finished)
    return finished


def log_finished(finished: Sequence[Finished]) -> None:
    """A line for each attempt just written; a failure's says what comes next (a retry, or nothing).

    Nothing is formatted for a level the logger drops: below ``-v 2`` a batch
    of successes costs one ``isEnabledFor`` call.
    """
    if not finished or not log.isEnabledFor(logging.WARNING):
        return
    successes = log.isEnabledFor(logging.INFO)
    for f in finished:
        if isinstance(f.outcome, Success) and f.written and not successes:
            continue  # a success that was fenced out is a warning, whatever the verbosity
        level, message, fields = _describe_finished(f)
        if not log.isEnabledFor(level):
            continue
        if isinstance(f.outcome, Failure) and f.outcome.traceback and log.isEnabledFor(logging.DEBUG):
            message += "\n" + f.outcome.traceback.rstrip()
        log.log(level, message, extra=fields)


def _describe_finished(f: Finished) -> tuple[int, str, dict[str, object]]:
    """The level, message and ``extra`` fields of an attempt's line."""
    job, outcome = f.job, f.outcome
    fields: dict[str, object] = {
        "job_id": job.id,
        "queue": job.queue,
        "task": job.task_name,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "duration": round(outcome.duration, 6),
    }
    head = f"job {job.id} ({job.task_name}) attempt {job.attempt}"
    if isinstance(outcome, Success):
        fields["outcome"] = "succeeded" if f.written else "not recorded"
        if not f.written:
            return logging.WARNING, f"{head} succeeded but was not recorded: its lease was lost", fields
        return logging.INFO, f"{head} succeeded in {_seconds(outcome.duration)}", fields
    fields["error_class"] = outcome.error_class
    failed = f"{head} failed: {outcome.error_class}: {outcome.error_message}"
    r = f.retry
    if r is None:
        fields["outcome"] = "not recorded"
        return logging.WARNING, f"{failed}; not recorded: the job was cancelled or its lease was lost", fields
    if r.status == q.PENDING:
        fields["retry_at"] = r.run_at.isoformat()
        when = _clock(r.run_at)
        if outcome.uncounted:
            fields["outcome"] = "given back"
            return (
                logging.INFO,
                f"{head} was given back: {outcome.error_message}; runs again at {when}",
                fields,
            )
        fields["outcome"] = "retry"
        return (
            logging.WARNING,
            f"{failed}; retry at {when} (attempt {job.attempt + 1} of {job.max_attempts})",
            fields,
        )
    fields["outcome"] = "failed"
    why = "" if job.attempt >= job.max_attempts else ", not retried"
    return (
        logging.ERROR,
        f"{failed}; failed for good (attempt {job.attempt} of {job.max_attempts}{why})",
        fields,
    )


def _seconds(duration: float) -> str:
    """A duration as people read one: milliseconds below a second."""
    return f"{duration * 1000:.1f}ms" if duration < 1 else f"{duration:.2f}s"


def _clock(moment: datetime.datetime) -> str:
    """HH:MM:SS in the process's time zone, as the log lines' own times; the date too if not today."""
    local = moment.astimezone()
    today = datetime.datetime.now(local.tzinfo).date()
    return local.strftime("%H:%M:%S" if local.date() == today else "%Y-%m-%d %H:%M:%S")


def announce_lost(retries: Sequence[Retry]) -> None:
    """``job_lost`` (and a warning) for attempts whose lease ran out and were recovered."""
    for r in retries:
        fate = f"retry at {_clock(r.run_at)}" if r.status == q.PENDING else "failed for good"
        log.warning(
            "job %s: its attempt's lease expired (the worker running it stopped); %s",
            r.job_id,
            fate,
            extra={"job_id": r.job_id, "outcome": "retry" if r.status == q.PENDING else "failed"},
        )
        signals.send(signals.job_lost, job_id=r.job_id, status=r.status)


def claim(conn: Any, **options: Any) -> list[ClaimedJob]:
    """Take and lease runnable jobs (``queue.claim``'s options), and announce their start."""
    jobs = q.claim(conn, **options)
    announce_started(jobs)
    return jobs


def record(
    conn: Any, *, worker_id: int, worker_name: str, jobs: Sequence[ClaimedJob], outcomes: Sequence[Outcome]
) -> list[Finished]:
    """Write finished attempts, fenced by their leases, wake what they held back, and announce them.

    Runs the statements in the caller's transaction. The outcomes are made
    storable first, so what is announced is what is written.
    """
    outcomes = [q.storable(o) for o in outcomes]
    successes = [o for o in outcomes if isinstance(o, Success)]
    failures = [o for o in outcomes if isinstance(o, Failure)]
    completed = q.complete(conn, worker_id=worker_id, worker_name=worker_name, successes=successes)
    retries = q.fail(conn, worker_id=worker_id, worker_name=worker_name, failures=failures)
    capped = {j.queue for j in jobs if j.capped}
    if capped:
        q.notify_queues(conn, capped)
    by_key = {(j.id, j.attempt): j for j in jobs}
    return announce_recorded(by_key, successes, failures, retries, completed)

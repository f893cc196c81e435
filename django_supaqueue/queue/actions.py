"""Operator actions and maintenance: cancel, retry, run now, reschedule, hold, delete, pause, prune."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db import connections, transaction

from ..constants import CANCEL_CHANNEL
from ..exceptions import InvalidOption
from ..models import Job
from . import queries
from .outcomes import notify_queues
from .spec import check_max_attempts, check_priority, check_run_at, split_run_at
from .tables import db_alias

SQL = queries.load("actions.sql")


def cancel(jobs: Iterable[Job | int], reason: str = "") -> list[int]:
    """Cancel pending or running jobs; returns the ids that were cancelled.

    A pending job will never run. A running attempt's worker is told to stop
    it, the way a timeout stops it; its result can never be written (the job
    is no longer in progress), but it keeps its lease until its body has
    really stopped, so that its serial queue or group stays taken until then.
    Finished jobs are left alone.
    """
    ids = [j.pk if isinstance(j, Job) else int(j) for j in jobs]
    if not ids:
        return []
    alias = db_alias()
    with transaction.atomic(using=alias), connections[alias].cursor() as cur:
        cur.execute(SQL["cancel"], {"job_id": ids, "reason": reason})
        rows = cur.fetchall()
        running = [(job_id, attempt) for job_id, attempt in rows if attempt is not None]
        if running:
            cur.execute(
                SQL["notify_cancelled"],
                {
                    "job_id": [r[0] for r in running],
                    "attempt": [r[1] for r in running],
                    "channel": CANCEL_CHANNEL,
                },
            )
    return [r[0] for r in rows]


def prune(
    conn: Any,
    *,
    successful_hours: float | None,
    failed_hours: float | None,
    cancelled_hours: float | None,
    batch: int = 1000,
) -> int:
    """Delete one batch of finished jobs older than their retention (None: keep); returns how many.

    Oldest first, through the partial index on finished_at, so a pass costs
    the same whatever the table's size. Their events go in the same statement.
    """
    ages = {"successful": successful_hours, "failed": failed_hours, "cancelled": cancelled_hours}
    kept = [h for h in ages.values() if h is not None]
    if not kept:
        return 0
    params = {k: h * 3600.0 if h is not None else None for k, h in ages.items()}
    params.update(oldest=min(kept) * 3600.0, batch=batch)
    with conn.cursor() as cur:
        cur.execute(SQL["prune"], params)
        return cur.rowcount


def retry_failed(conn: Any, *, queue: str, limit: int, worker_name: str, reason: str = "") -> list[int]:
    """Give up to ``limit`` jobs of ``queue`` that failed for good one more attempt each (pending now).

    Runs inside the caller's transaction; each gets a "manual_retry" event.
    """
    if limit <= 0:
        return []
    params = {"queue": queue, "limit": limit, "worker_name": worker_name, "reason": reason}
    return [r[0] for r in conn.execute(SQL["retry_failed"], params).fetchall()]


def _ids(jobs: Iterable[Job | int]) -> list[int]:
    return [j.pk if isinstance(j, Job) else int(j) for j in jobs]


def _act(sql: str, params: dict[str, Any], *, wake: bool) -> list[int]:
    """Run one operator statement in a small transaction; NOTIFY the queues it made runnable.

    A job going back to pending may meet a key that a concurrent enqueue just
    gave to a new pending job; the statement then runs again on a fresh
    snapshot, where the newer job keeps the key.
    """
    from django.db import IntegrityError

    alias = db_alias()
    for attempt in range(3):
        try:
            with transaction.atomic(using=alias), connections[alias].cursor() as cur:
                cur.execute(sql, params)
                rows = cur.fetchall()
                if wake:
                    notify_queues(cur, [r[1] for r in rows])
            return sorted(r[0] for r in rows)
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def retry_now(jobs: Iterable[Job | int], reason: str = "") -> list[int]:
    """Run failed or cancelled jobs again now, and jobs waiting out a retry back-off at once.

    The job becomes pending with ``run_at`` = now and is un-held; a job with no
    attempts left gets one more (``max_attempts`` = attempts + 1). Its key
    goes back with it unless a newer pending job holds that key. Writes a
    ``manual_retry`` event; returns the ids it changed.
    """
    ids = _ids(jobs)
    if not ids:
        return []
    return _act(SQL["retry_now"], {"job_id": ids, "reason": reason, "kind": "manual_retry"}, wake=True)


def run_now(jobs: Iterable[Job | int], reason: str = "") -> list[int]:
    """Make pending jobs whose ``run_at`` is in the future runnable now (a ``run_now`` event).

    A held job stays held: run now changes when a job may run, not whether.
    """
    ids = _ids(jobs)
    if not ids:
        return []
    return _act(SQL["run_now"], {"job_id": ids, "reason": reason, "kind": "run_now"}, wake=True)


def reschedule(
    jobs: Iterable[Job | int],
    *,
    run_at: datetime | timedelta | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
) -> int:
    """Change when jobs not started yet run, their priority or their attempts; returns how many changed.

    Jobs waiting for dependencies or pending (held or not, a retry's back-off
    included) change; the others are left alone. None leaves a value as it
    is. The work is the database function supaqueue_reschedule_jobs, which
    SQL callers use too, so the two can never differ; the options are checked
    here first, so that a bad one raises InvalidOption as enqueue's do.
    """
    when = check_run_at(run_at)
    if priority is not None:
        check_priority(priority)
    if max_attempts is not None:
        check_max_attempts(max_attempts)
    if when is None and priority is None and max_attempts is None:
        raise InvalidOption("reschedule needs run_at, priority or max_attempts: it changes those.")
    ids = _ids(jobs)
    if not ids:
        return 0
    params = {"job_id": ids, **split_run_at(when), "priority": priority, "max_attempts": max_attempts}
    alias = db_alias()
    with transaction.atomic(using=alias), connections[alias].cursor() as cur:
        cur.execute(SQL["reschedule"], params)
        return cur.fetchone()[0]


def hold(jobs: Iterable[Job | int], reason: str = "") -> list[int]:
    """Keep pending jobs from being claimed (``enabled`` = false, a ``held`` event)."""
    ids = _ids(jobs)
    if not ids:
        return []
    params = {"job_id": ids, "reason": reason, "enabled": False, "kind": "held"}
    return _act(SQL["set_enabled"], params, wake=False)


def release_hold(jobs: Iterable[Job | int], reason: str = "") -> list[int]:
    """Let held pending jobs be claimed again (a ``hold_released`` event) and wake their workers."""
    ids = _ids(jobs)
    if not ids:
        return []
    params = {"job_id": ids, "reason": reason, "enabled": True, "kind": "hold_released"}
    return _act(SQL["set_enabled"], params, wake=True)


def delete(jobs: Iterable[Job | int]) -> list[int]:
    """Delete jobs and their history; running jobs are refused (cancel them first).

    A running attempt keeps its lease until it is cancelled, so deleting only
    finished, pending or cancelled jobs means no worker ever writes to a job
    that vanished under it. Returns the ids deleted.
    """
    ids = _ids(jobs)
    if not ids:
        return []
    alias = db_alias()
    with transaction.atomic(using=alias), connections[alias].cursor() as cur:
        cur.execute(SQL["settle_deleted"], {"job_id": ids})
        cur.execute(SQL["delete"], {"job_id": ids})
        return sorted(r[0] for r in cur.fetchall())


def pause_queues(names: Iterable[str]) -> list[str]:
    """Pause queues: their jobs stay, no worker claims them. Returns the names that changed."""
    return _set_paused(names, paused=True)


def resume_queues(names: Iterable[str]) -> list[str]:
    """Resume paused queues and wake their workers at commit. Returns the names that changed."""
    return _set_paused(names, paused=False)


def _set_paused(names: Iterable[str], *, paused: bool) -> list[str]:
    names = sorted(set(names))
    if not names:
        return []
    alias = db_alias()
    with transaction.atomic(using=alias), connections[alias].cursor() as cur:
        cur.execute(SQL["set_paused"], {"names": names, "paused": paused})
        changed = sorted(r[0] for r in cur.fetchall())
        if not paused:
            notify_queues(cur, changed)
    return changed


def wake_queues(names: Iterable[str]) -> None:
    """Tell listening workers these queues may have runnable jobs (sent at commit).

    For changes made outside these functions, such as a queue's settings saved
    in the admin: a raised concurrency cap or an unpaused queue takes effect at once.
    """
    names = sorted(set(names))
    if not names:
        return
    with connections[db_alias()].cursor() as cur:
        notify_queues(cur, names)

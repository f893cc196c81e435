"""Read-only numbers about the queue for operators (status and health commands).

Each query walks an index, never the whole table: counts per queue and
status use the (queue, status) index, recent throughput the partial index on
finished_at, waiting time the claim index of runnable jobs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import connections

from . import conf
from .models import CurrentJob, Job, Queue, Worker

_COUNTS = f"""
SELECT q.name, j.status, count(*) FROM {Job._meta.db_table} j
JOIN {Queue._meta.db_table} q ON q.id = j.queue_id GROUP BY q.name, j.status
"""
_FINISHED_SINCE = f"""
SELECT status, count(*) FROM {Job._meta.db_table}
WHERE finished_at IS NOT NULL AND finished_at > now() - make_interval(secs => %s) GROUP BY status
"""
_OLDEST_RUNNABLE = f"""
SELECT q.name, extract(epoch FROM now() - min(j.run_at))::float8 FROM {Job._meta.db_table} j
JOIN {Queue._meta.db_table} q ON q.id = j.queue_id
WHERE j.status = 'pending' AND j.enabled AND j.run_at <= now() GROUP BY q.name
"""
_WORKERS = f"""
SELECT w.name, w.host, w.pid, w.concurrency, extract(epoch FROM now() - w.last_heartbeat_at)::float8,
       coalesce(array_agg(j.task_name ORDER BY j.id) FILTER (WHERE j.id IS NOT NULL), '{{}}')
FROM {Worker._meta.db_table} w
LEFT JOIN {CurrentJob._meta.db_table} c ON c.worker_id = w.id
LEFT JOIN {Job._meta.db_table} j ON j.id = c.job_id
GROUP BY w.id ORDER BY w.name
"""


def _rows(sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with connections[conf.get("DATABASE")].cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def snapshot(window_seconds: float = 60.0) -> dict[str, Any]:
    """Everything the status view shows, as plain JSON-able data."""
    queues: dict[str, dict[str, Any]] = {
        name: {
            "paused": paused,
            "concurrency_limit": cap,
            "counts": {s: 0 for s in Job.Status.values},
            "oldest_runnable_seconds": None,
        }
        for name, paused, cap in Queue.objects.values_list("name", "paused", "concurrency_limit")
    }
    for name, status, n in _rows(_COUNTS):
        queues.setdefault(name, {"counts": {}})["counts"][status] = n
    for name, age in _rows(_OLDEST_RUNNABLE):
        queues[name]["oldest_runnable_seconds"] = round(age, 3)
    finished = dict(_rows(_FINISHED_SINCE, [window_seconds]))
    workers = [
        {
            "name": name,
            "host": host,
            "pid": pid,
            "concurrency": conc,
            "seconds_since_heartbeat": round(age, 3),
            "running": list(running),
        }
        for name, host, pid, conc, age, running in _rows(_WORKERS)
    ]
    return {
        "at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "queues": queues,
        "finished_last_minute": {s: finished.get(s, 0) for s in ("successful", "failed", "cancelled")},
        "workers": workers,
    }

"""Jobs with dependencies: writing a job graph so that no dependent is ever left waiting."""

from __future__ import annotations

from typing import Any

from ..exceptions import InvalidOption
from ..models import Job
from . import queries
from .rows import as_columns, job_from_text_row, match_written, queue_defaults
from .spec import JobSpec, Row
from .tables import CANCELLED, FAILED, SUCCESSFUL

SQL = queries.load("graph.sql")


def enqueue_graph(cur: Any, alias: str, rows: list[Row]) -> list[Job]:
    """Write jobs with dependencies: existing jobs, or specs earlier in the same call.

    Statements: mark (and lock) the existing dependencies, insert the jobs,
    mark the not-yet-started jobs that keyed specs were deduplicated to (they
    stand in for those specs; only when there are some), insert the edges,
    and, only when needed, settle dependents whose dependency had already finished.
    """
    if any(r.spec.key_mode != "dedupe" for r in rows):
        raise InvalidOption("jobs with dependencies take key_mode='dedupe' only.")
    index = {id(r.spec): n for n, r in enumerate(rows)}
    internal: list[list[int]] = []
    external: list[list[int]] = []
    for n, r in enumerate(rows):
        inside, outside = _split_dependencies(r.spec, index, n)
        internal.append(inside)
        external.append(outside)
    depended_on = {d for inside in internal for d in inside}
    status = _mark_dependencies(cur, sorted({d for outside in external for d in outside}))
    params = as_columns(rows, extended=True)
    params.update(
        trace=rows[0].trace,
        waiting_for=[
            len(internal[n]) + sum(status[d] != SUCCESSFUL for d in external[n]) for n in range(len(rows))
        ],
        has_dependents=[n in depended_on for n in range(len(rows))],
        on_failure=[r.spec.on_dependency_failure or Job.OnDependencyFailure.CANCEL for r in rows],
        **queue_defaults(),
    )
    cur.execute(SQL["insert_graph"], params)
    written = [job_from_text_row(alias, v) for v in cur.fetchall()]
    jobs = match_written(cur, alias, [r.key for r in rows], written)
    new = {job.pk for job in written}
    # A keyed spec that met a job not started yet is that job: its dependents wait for it.
    stand_ins = sorted({jobs[d].pk for d in depended_on if jobs[d].pk not in new})
    status.update(_mark_dependencies(cur, stand_ins))
    edges: dict[str, list[Any]] = {"job_id": [], "depends_on_id": [], "position": [], "settled": []}
    for n, job in enumerate(jobs):
        if job.pk not in new:
            continue  # deduplicated: the existing job keeps its own dependencies
        targets = [jobs[d].pk for d in internal[n]] + external[n]
        for position, target in enumerate(targets, start=1):
            edges["job_id"].append(job.pk)
            edges["depends_on_id"].append(target)
            edges["position"].append(position)
            # Counted as unfinished above (so left to settle below): in-call ones and stand-ins.
            edges["settled"].append(target in external[n] and status[target] == SUCCESSFUL)
    cur.execute(SQL["insert_dependencies"], edges)
    # Dependencies that finished before their dependents existed are settled now, by the same
    # function as any other finish: a stand-in that succeeded counts its new dependents down.
    finished = sorted(
        d for d, s in status.items() if s in (FAILED, CANCELLED) or (s == SUCCESSFUL and d in stand_ins)
    )
    if finished:
        cur.execute(SQL["settle_now"], {"ids": finished, "outcomes": [status[d] for d in finished]})
        _refresh_states(cur, jobs)
    return jobs


def _mark_dependencies(cur: Any, ids: list[int]) -> dict[int, str]:
    """Lock and mark existing jobs that new jobs will depend on; their latest statuses by id."""
    if not ids:
        return {}
    cur.execute(SQL["mark_dependencies"], {"ids": ids})
    status = dict(cur.fetchall())
    unknown = [d for d in ids if d not in status]
    if unknown:
        raise InvalidOption(f"depends_on names jobs that do not exist: {unknown}.")
    return status


def _refresh_states(cur: Any, jobs: list[Job]) -> None:
    """Re-read the states that settling changed after the jobs were written."""
    cur.execute(SQL["status_of"], {"ids": [j.pk for j in jobs]})
    states = {row[0]: row[1:] for row in cur.fetchall()}
    for job in jobs:
        job.status, job.waiting_for, job.finished_at = states[job.pk]


def _split_dependencies(spec: JobSpec, index: dict[int, int], n: int) -> tuple[list[int], list[int]]:
    """A spec's dependencies as (positions of earlier specs in the call, ids of existing jobs)."""
    inside: list[int] = []
    outside: list[int] = []
    for dep in spec.depends_on:
        if isinstance(dep, JobSpec):
            at = index.get(id(dep))
            if at is None or at >= n:
                raise InvalidOption(
                    "depends_on may name specs of the same call only when they come earlier in it "
                    "(use django_supaqueue.Pipeline, which orders them)."
                )
            if at not in inside:
                inside.append(at)
            continue
        if isinstance(dep, Job):
            dep = dep.pk
        if isinstance(dep, bool) or not isinstance(dep, int) or dep is None:
            raise InvalidOption(f"depends_on takes jobs or job ids, not {dep!r}.")
        if dep not in outside:
            outside.append(dep)
    return inside, outside

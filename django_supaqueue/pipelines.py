"""Job graphs: write a chain or a DAG of jobs in one call, and read results along it.

A ``Pipeline`` collects steps (task calls or HTTP calls), each naming the
steps or existing jobs it depends on; ``enqueue()`` orders them, rejects
cycles, and writes every job and edge in one transaction through
``producer.produce``. A step runs once all its dependencies have succeeded
(fan-in); a dependency that fails for good or is cancelled cancels it, unless
it says ``on_dependency_failure="run"``. Inside a running step,
``dependency_results()`` returns what its dependencies returned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from . import conf, context
from .exceptions import DependencyCycle, InvalidOption, NotInAJob
from .models import Job, JobDependency
from .producer import produce
from .queue import JobSpec, check_tenant_id
from .tasks import get_task, task_name


@dataclasses.dataclass(eq=False)
class Step:
    """One job of a pipeline; ``job`` is set once the pipeline is enqueued."""

    name: str
    spec: JobSpec
    depends_on: list[Any]
    job: Job | None = None

    def __repr__(self) -> str:
        return f"<Step {self.name}>"


class Pipeline:
    """A graph of new jobs, written together in one transaction by ``enqueue()``::

        p = Pipeline()
        a = p.add(fetch, url="https://a")
        b = p.add(fetch, url="https://b")
        p.add(merge, depends_on=[a, b])          # runs after both succeed
        p.chain(p.add(extract), p.add(transform), p.add(load))
        jobs = p.enqueue()                       # one transaction

    Steps are named (``name=``, else the task's name and a number) so ``depends_on`` can name them.
    ``Pipeline(tenant_id="acme")`` gives every step that tenant, unless a step gives its own.
    """

    def __init__(self, *, tenant_id: str | None = None) -> None:
        self.steps: list[Step] = []
        self._names: dict[str, Step] = {}
        self.tenant_id = check_tenant_id(tenant_id)

    def add(
        self,
        task: Any,
        *args: Any,
        name: str | None = None,
        depends_on: Sequence[Any] = (),
        queue: str | None = None,
        priority: int | None = None,
        run_at: Any = None,
        max_attempts: int | None = None,
        key: str | None = None,
        on_dependency_failure: str | None = None,
        tenant_id: str | None = None,
        **kwargs: Any,
    ) -> Step:
        """Add a call of ``task``; ``depends_on`` takes steps, step names, jobs or job ids."""
        t = get_task(task_name(task))
        t.check_arguments(args, kwargs)
        spec = t.job_spec(
            args,
            kwargs,
            queue=queue,
            priority=priority,
            run_at=run_at,
            key=key,
            max_attempts=max_attempts,
            on_dependency_failure=on_dependency_failure,
            tenant_id=self.tenant_id if tenant_id is None else tenant_id,
        )
        return self._add(name or f"{t.name}#{len(self.steps) + 1}", spec, depends_on)

    def add_http(
        self,
        queue: str,
        payload: dict[str, Any] | None = None,
        path: str | None = None,
        *,
        name: str | None = None,
        depends_on: Sequence[Any] = (),
        **options: Any,
    ) -> Step:
        """Add a call to an HTTP queue (the options of ``enqueue_http``)."""
        from .handlers.http import http_job_spec

        if options.get("tenant_id") is None:
            options["tenant_id"] = self.tenant_id
        spec = http_job_spec(queue, payload, path, **options)
        return self._add(name or f"{queue}#{len(self.steps) + 1}", spec, depends_on)

    def chain(self, *steps: Step) -> Step:
        """Make each step depend on the one before it; returns the last."""
        for before, after in zip(steps, steps[1:], strict=False):
            if before not in after.depends_on:
                after.depends_on.append(before)
        return steps[-1]

    def enqueue(self) -> list[Job]:
        """Write every step's job and edge in one transaction; returns the jobs in the order added."""
        ordered = self._ordered()
        by_step = {id(s): s.spec for s in ordered}
        for s in ordered:
            s.spec.depends_on = [
                by_step[id(d)] if isinstance(d, Step) else (d.pk if isinstance(d, Job) else d)
                for d in (self._resolve(d) for d in s.depends_on)
            ]
        jobs = produce([s.spec for s in ordered])
        for s, job in zip(ordered, jobs, strict=True):
            s.job = job
        return [s.job for s in self.steps]  # type: ignore[misc]

    def _add(self, name: str, spec: JobSpec, depends_on: Sequence[Any]) -> Step:
        if name in self._names:
            raise InvalidOption(f"the pipeline already has a step named {name!r}.")
        step = Step(name=name, spec=spec, depends_on=list(depends_on))
        self.steps.append(step)
        self._names[name] = step
        return step

    def _resolve(self, dep: Any) -> Any:
        if isinstance(dep, str):
            try:
                return self._names[dep]
            except KeyError:
                raise InvalidOption(f"depends_on names no step of this pipeline: {dep!r}.") from None
        if isinstance(dep, Step) and dep not in self.steps:
            raise InvalidOption(f"{dep!r} belongs to another pipeline.")
        return dep

    def _ordered(self) -> list[Step]:
        """The steps with every step after the steps it depends on (Kahn's algorithm, stable)."""
        after: dict[int, list[Step]] = {id(s): [] for s in self.steps}
        waiting: dict[int, int] = {}
        for s in self.steps:
            inside = {id(d) for d in map(self._resolve, s.depends_on) if isinstance(d, Step)}
            waiting[id(s)] = len(inside)
            for d in self.steps:
                if id(d) in inside:
                    after[id(d)].append(s)
        ready = [s for s in self.steps if waiting[id(s)] == 0]
        ordered: list[Step] = []
        while ready:
            s = ready.pop(0)
            ordered.append(s)
            for nxt in after[id(s)]:
                waiting[id(nxt)] -= 1
                if waiting[id(nxt)] == 0:
                    ready.append(nxt)
        if len(ordered) < len(self.steps):
            stuck = [s.name for s in self.steps if waiting[id(s)] > 0]
            raise DependencyCycle(
                f"these steps depend on each other in a cycle, so none could ever run: {', '.join(stuck)}."
            )
        return ordered


def dependency_results(job: Job | int | None = None) -> list[Any]:
    """What the jobs ``job`` depends on returned, in its ``depends_on`` order.

    Without an argument, inside a running task: the running job's. A
    dependency that did not succeed (it failed or was cancelled, and this job
    runs anyway) gives None, like one that returned nothing.
    """
    if job is None:
        running = context.current_attempt()
        if running is None:
            raise NotInAJob("dependency_results() without a job must be called from inside a running task.")
        job_id = running[0]
    else:
        job_id = job.pk if isinstance(job, Job) else int(job)
    links = (
        JobDependency.objects.using(conf.get("DATABASE"))
        .filter(job_id=job_id)
        .order_by("position", "id")
        .values_list("depends_on__status", "depends_on__result")
    )
    return [result if status == Job.Status.SUCCESSFUL else None for status, result in links]

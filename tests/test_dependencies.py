"""Dependencies and pipelines: fan-in, failure propagation, cycles, results, and the races."""

import threading

import pytest
from django.db import connection, transaction

from django_supaqueue import Pipeline, cancel, dependency_results
from django_supaqueue import queue as q
from django_supaqueue.exceptions import DependencyCycle, InvalidOption, NotInAJob
from django_supaqueue.models import Job, JobDependency, JobEvent
from django_supaqueue.queue import graph
from django_supaqueue.worker.connection import connect
from tests.testapp import tasks
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)


def status(job):
    return Job.objects.get(pk=job.pk).status


def test_a_job_waits_until_every_dependency_has_succeeded(drain):
    a = tasks.step.enqueue(1, queue="first")
    b = tasks.step.enqueue(2, queue="second")
    c = tasks.gather.enqueue(depends_on=[a, b.pk])
    assert c.status == status(c) == Job.Status.WAITING
    assert Job.objects.get(pk=c.pk).waiting_for == 2

    drain(queues=["first"])
    assert status(c) == Job.Status.WAITING and Job.objects.get(pk=c.pk).waiting_for == 1
    drain()  # every queue: b, then c
    stored = Job.objects.get(pk=c.pk)
    assert stored.status == Job.Status.SUCCESSFUL
    assert stored.result == {"inputs": [1, 2]}


def test_a_pipeline_chain_runs_its_steps_in_order_across_queues(drain):
    p = Pipeline()
    steps = [p.add(tasks.step, n, queue=f"q{n % 2}", label="chain") for n in range(5)]
    p.chain(*steps)
    jobs = p.enqueue()
    assert [j.status for j in jobs] == ["pending"] + ["waiting"] * 4

    drain(concurrency=4)
    runs = list(Execution.objects.filter(label="chain").order_by("started"))
    assert [r.n for r in runs] == [0, 1, 2, 3, 4]
    assert all(later.started >= earlier.ended for earlier, later in zip(runs, runs[1:], strict=False))
    assert set(Job.objects.values_list("status", flat=True)) == {"successful"}


def test_fan_out_and_fan_in_with_named_steps_declared_in_any_order(drain):
    p = Pipeline()
    p.add(tasks.gather, name="merge", depends_on=["left", "right"], label="merge")
    p.add(tasks.step, 10, name="left", depends_on=["root"])
    p.add(tasks.step, 20, name="right", depends_on=["root"])
    p.add(tasks.step, 1, name="root")
    merge, left, right, root = p.enqueue()
    assert root.status == "pending" and {merge.status, left.status, right.status} == {"waiting"}
    assert list(Job.objects.get(pk=merge.pk).depends_on.order_by("id")) == sorted(
        [left, right], key=lambda j: j.pk
    )

    drain()
    assert Job.objects.get(pk=merge.pk).result == {"inputs": [10, 20]}


def test_a_cycle_is_rejected_and_nothing_is_written():
    p = Pipeline()
    p.add(tasks.step, 1, name="a", depends_on=["c"])
    p.add(tasks.step, 2, name="b", depends_on=["a"])
    p.add(tasks.step, 3, name="c", depends_on=["b"])
    p.add(tasks.step, 4, name="free")
    with pytest.raises(DependencyCycle, match="a, b, c"):
        p.enqueue()
    assert not Job.objects.exists()


def test_unknown_step_names_and_unknown_jobs_are_clear_errors():
    p = Pipeline()
    p.add(tasks.step, 1, depends_on=["nope"])
    with pytest.raises(InvalidOption, match="no step of this pipeline: 'nope'"):
        p.enqueue()
    with pytest.raises(InvalidOption, match=r"do not exist: \[987654\]"):
        tasks.step.enqueue(1, depends_on=[987654])
    assert not Job.objects.exists()


def test_a_failed_dependency_cancels_its_dependents_transitively(drain):
    p = Pipeline()
    bad = p.add(tasks.always_fails, name="bad")
    child = p.add(tasks.step, 1, name="child", depends_on=[bad])
    grandchild = p.add(tasks.step, 2, name="grandchild", depends_on=[child])
    tolerant = p.add(tasks.gather, name="tolerant", depends_on=[bad], on_dependency_failure="run")
    p.enqueue()

    drain()  # always_fails has 2 attempts
    assert status(bad.job) == Job.Status.FAILED
    assert status(child.job) == status(grandchild.job) == Job.Status.CANCELLED
    event = JobEvent.objects.get(job=child.job, kind="cancelled")
    assert event.error_class == "django_supaqueue.exceptions.DependencyFailed"
    assert f"job #{bad.job.pk}, which this job depends on, failed" in event.error_message
    assert f"job #{child.job.pk}" in JobEvent.objects.get(job=grandchild.job, kind="cancelled").error_message
    assert Job.objects.get(pk=tolerant.job.pk).result == {"inputs": [None]}
    assert not Execution.objects.filter(label="step").exists()


def test_cancelling_a_dependency_cancels_its_dependents():
    a = tasks.step.enqueue(1)
    b = tasks.step.enqueue(2, depends_on=[a])
    c = tasks.step.enqueue(3, depends_on=[b])
    assert cancel([a]) == [a.pk]
    assert status(b) == status(c) == Job.Status.CANCELLED
    assert "was cancelled" in JobEvent.objects.get(job=b, kind="cancelled").error_message


def test_cancelling_a_waiting_job_works_and_leaves_its_dependency_alone():
    a = tasks.step.enqueue(1)
    b = tasks.step.enqueue(2, depends_on=[a])
    assert cancel([b]) == [b.pk]
    assert status(a) == Job.Status.PENDING and status(b) == Job.Status.CANCELLED


def test_depending_on_finished_jobs_counts_only_the_unfinished_ones(drain):
    done = tasks.step.enqueue(1)
    drain()
    failed = tasks.always_fails.enqueue(max_attempts=1)
    drain()

    ready = tasks.step.enqueue(2, depends_on=[done])
    assert ready.status == status(ready) == Job.Status.PENDING
    doomed = tasks.step.enqueue(3, depends_on=[done, failed])
    assert doomed.status == status(doomed) == Job.Status.CANCELLED
    runs_anyway = tasks.gather.enqueue(depends_on=[done, failed], on_dependency_failure="run")
    assert runs_anyway.status == Job.Status.PENDING
    drain()
    assert Job.objects.get(pk=runs_anyway.pk).result == {"inputs": [1, None]}


def test_deleting_a_pending_dependency_cancels_dependents_and_pruning_keeps_foreign_keys_whole(drain):
    a = tasks.step.enqueue(1)
    b = tasks.step.enqueue(2, depends_on=[a])
    assert q.delete([a]) == [a.pk]
    assert status(b) == Job.Status.CANCELLED

    c = tasks.step.enqueue(3)
    d = tasks.step.enqueue(4, depends_on=[c])
    drain()
    Job.objects.update(finished_at=Job.objects.get(pk=d.pk).finished_at.replace(year=2000))
    with connect() as conn:
        assert q.prune(conn, successful_hours=1, failed_hours=1, cancelled_hours=1) == 3
        conn.commit()
    assert not Job.objects.exists() and not JobDependency.objects.exists()


def test_enqueue_many_jobs_can_share_dependencies(drain):
    root = tasks.step.enqueue(0)
    fanned = tasks.step.enqueue_many([{"n": n} for n in range(1, 4)], depends_on=[root])
    assert {j.status for j in fanned} == {"waiting"}
    drain()
    assert set(Job.objects.values_list("status", flat=True)) == {"successful"}


def test_a_waiting_job_holds_its_key():
    a = tasks.step.enqueue(1)
    b = tasks.step.enqueue(2, depends_on=[a], key="report:today")
    assert b.status == Job.Status.WAITING
    assert tasks.step.enqueue(3, key="report:today").pk == b.pk
    with pytest.raises(InvalidOption, match="key_mode='dedupe' only"):
        tasks.step.enqueue(4, depends_on=[a], key="report:today", key_mode="replace")


def _daily_pipeline():
    p = Pipeline()
    root = p.add(tasks.step, 1, key="daily:root", label="daily")
    p.add(tasks.gather, depends_on=[root], label="daily-end")
    return p.enqueue()


def test_a_keyed_step_met_twice_is_one_job_that_both_pipelines_wait_for(drain):
    root, first_end = _daily_pipeline()
    again, second_end = _daily_pipeline()
    assert again.pk == root.pk and second_end.pk != first_end.pk
    assert Job.objects.get(pk=root.pk).has_dependents
    drain()
    assert Execution.objects.filter(label="daily").count() == 1
    assert [j.result for j in Job.objects.filter(pk__in=[first_end.pk, second_end.pk])] == [
        {"inputs": [1]}
    ] * 2


def test_a_keyed_step_that_succeeds_while_the_pipeline_is_written_counts_as_done(drain, monkeypatch):
    """The race between deduplicating to a pending job and locking it: the job finishes in
    between (injected here on another connection), and its new dependents start pending."""
    root, _end = _daily_pipeline()
    real_mark = graph._mark_dependencies

    def finish_root_first(cur, ids):
        if root.pk in ids:
            with connect() as conn:
                wid = q.register_worker(conn, name="racer", host="h", pid=1, queues=None, concurrency=1)
                [claimed] = q.claim(
                    conn,
                    worker_id=wid,
                    worker_name="racer",
                    queues=None,
                    limit=1,
                    lease_seconds=30,
                    job_ids=[root.pk],
                )
                q.complete(conn, worker_id=wid, worker_name="racer", successes=[_ok(claimed)])
                conn.commit()
        return real_mark(cur, ids)

    monkeypatch.setattr(graph, "_mark_dependencies", finish_root_first)
    again, second_end = _daily_pipeline()
    assert again.pk == root.pk
    assert second_end.status == status(second_end) == Job.Status.PENDING
    assert JobDependency.objects.get(job=second_end).settled


def test_dependency_results_outside_a_job_needs_a_job():
    with pytest.raises(NotInAJob):
        dependency_results()
    a = tasks.step.enqueue(1)
    b = tasks.step.enqueue(2, depends_on=[a])
    assert dependency_results(b) == [None]


def test_dependencies_finishing_at_once_in_two_transactions_release_the_dependent():
    """Two workers complete the two dependencies concurrently: the count on the dependent's row
    serialises them, so it becomes pending exactly once, never stuck at one."""
    a = tasks.step.enqueue(1)
    b = tasks.step.enqueue(2)
    c = tasks.step.enqueue(3, depends_on=[a, b])
    conns = [connect(), connect()]
    try:
        held = []
        for conn, job in zip(conns, (a, b), strict=True):
            wid = q.register_worker(conn, name=f"w{job.pk}", host="h", pid=1, queues=None, concurrency=1)
            conn.commit()
            [claimed] = q.claim(
                conn, worker_id=wid, worker_name="w", queues=None, limit=1, lease_seconds=30, job_ids=[job.pk]
            )
            conn.commit()
            held.append((conn, wid, claimed))
        # Both complete inside open transactions before either commits.
        first, second = held
        q.complete(first[0], worker_id=first[1], worker_name="w", successes=[_ok(first[2])])
        done = threading.Event()

        def finish_second():
            q.complete(second[0], worker_id=second[1], worker_name="w", successes=[_ok(second[2])])
            second[0].commit()
            done.set()

        t = threading.Thread(target=finish_second)
        t.start()
        first[0].commit()
        t.join(10)
        assert done.is_set()
    finally:
        for conn in conns:
            conn.close()
    stored = Job.objects.get(pk=c.pk)
    assert (stored.status, stored.waiting_for) == (Job.Status.PENDING, 0)


def test_a_dependency_finishing_while_its_dependent_is_enqueued_still_releases_it():
    """The enqueue locks the dependency; the completion waits for it, then settles in a fresh
    snapshot that sees the new edge (the case that leaves Supaqueue's dependents blocked forever)."""
    a = tasks.step.enqueue(1)
    conn = connect()
    enqueued, release = threading.Event(), threading.Event()
    dependents = []

    def enqueue_in_open_transaction():
        try:
            with transaction.atomic():
                dependents.append(tasks.step.enqueue(2, depends_on=[a]))
                enqueued.set()
                release.wait(10)
        finally:
            connection.close()

    try:
        wid = q.register_worker(conn, name="w", host="h", pid=1, queues=None, concurrency=1)
        conn.commit()
        [claimed] = q.claim(conn, worker_id=wid, worker_name="w", queues=None, limit=1, lease_seconds=30)
        conn.commit()
        enqueuer = threading.Thread(target=enqueue_in_open_transaction)
        enqueuer.start()
        assert enqueued.wait(10)
        finished = threading.Event()

        def complete():
            q.complete(conn, worker_id=wid, worker_name="w", successes=[_ok(claimed)])
            conn.commit()
            finished.set()

        completer = threading.Thread(target=complete)
        completer.start()
        assert not finished.wait(0.5)  # blocked on the enqueue's lock
        release.set()
        enqueuer.join(10)
        completer.join(10)
        assert finished.is_set()
    finally:
        conn.close()
    [dependent] = dependents
    assert dependent.status == Job.Status.WAITING
    assert status(dependent) == Job.Status.PENDING


def _ok(claimed):
    return q.Success(job_id=claimed.id, attempt=claimed.attempt, result="1", duration=0.0)


def test_many_diamonds_drained_by_worker_processes_all_finish(worker_processes):
    roots = []
    for n in range(20):
        p = Pipeline()
        top = p.add(tasks.step, n, label="diamond")
        left = p.add(tasks.step, n, depends_on=[top], label="diamond")
        right = p.add(tasks.step, n, depends_on=[top], label="diamond")
        p.add(tasks.gather, depends_on=[left, right], label="diamond-end")
        roots.extend(p.enqueue())
    for _ in range(3):
        worker_processes.start("-c", "4")
    from tests.helpers import wait_for

    wait_for(lambda: Job.objects.filter(status="successful").count() == 80, timeout=60)
    assert Execution.objects.filter(label="diamond-end").count() == 20
    assert all(j.result == {"inputs": [j2, j2]} for j, j2 in _merge_results())


def _merge_results():
    for job in Job.objects.filter(task_name="tests.testapp.tasks.gather"):
        n = Job.objects.get(pk=job.depends_on.first().pk).result
        yield job, n


def test_the_job_page_links_dependencies_and_dependents(admin_client):
    from django.urls import reverse

    a = tasks.step.enqueue(1)
    b = tasks.step.enqueue(2, depends_on=[a])
    page = admin_client.get(reverse("admin:supaqueue_job_change", args=[b.pk])).content.decode()
    assert f'href="{reverse("admin:supaqueue_job_change", args=[a.pk])}">#{a.pk}</a>' in page
    assert "1 still to succeed" in page and "Waiting for dependencies" in page
    page = admin_client.get(reverse("admin:supaqueue_job_change", args=[a.pk])).content.decode()
    assert f">#{b.pk}</a>" in page
    listing = admin_client.get(reverse("admin:supaqueue_job_changelist"), {"status__exact": "waiting"})
    assert listing.status_code == 200 and f">{b.pk}<" in listing.content.decode()

"""Job keys: the three key modes, the running-job case, enqueue_many, and concurrent enqueues."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from django_supaqueue import enqueue, enqueue_many
from django_supaqueue import queue as q
from django_supaqueue.exceptions import InvalidOption
from django_supaqueue.models import Job
from django_supaqueue.worker.connection import connect
from tests.testapp import tasks


def pending_with(key):
    return list(Job.objects.filter(key=key, status=Job.Status.PENDING))


@pytest.mark.django_db
def test_dedupe_is_the_default_and_keeps_the_pending_job_untouched():
    later = timezone.now() + timedelta(hours=1)
    first = tasks.noop.enqueue(i=1, key="k", run_at=later)
    second = tasks.noop.enqueue(i=2, key="k", key_mode="dedupe")
    assert second.pk == first.pk
    stored = Job.objects.get(pk=first.pk)
    assert stored.payload == {"i": 1} and stored.run_at == later


@pytest.mark.django_db
def test_replace_debounces_by_updating_payload_priority_and_run_at():
    soon = timezone.now() + timedelta(seconds=10)
    later = timezone.now() + timedelta(minutes=5)
    first = tasks.noop.enqueue(i=1, key="search:7", run_at=soon)
    second = tasks.noop.enqueue(i=2, key="search:7", key_mode="replace", run_at=later, priority=9)
    assert second.pk == first.pk
    stored = Job.objects.get(pk=first.pk)
    assert (stored.payload, stored.run_at, stored.priority) == ({"i": 2}, later, 9)
    assert second.payload == {"i": 2} and second.run_at == later and second.created_at == first.created_at
    assert Job.objects.count() == 1


@pytest.mark.django_db
def test_preserve_run_at_throttles_by_updating_payload_but_not_run_at():
    soon = timezone.now() + timedelta(seconds=10)
    first = tasks.noop.enqueue(i=1, key="digest", run_at=soon)
    second = tasks.noop.enqueue(
        i=2, key="digest", key_mode="preserve_run_at", run_at=timezone.now() + timedelta(hours=1)
    )
    stored = Job.objects.get(pk=first.pk)
    assert second.pk == first.pk and stored.payload == {"i": 2} and stored.run_at == soon


@pytest.mark.django_db
def test_a_new_key_inserts_whatever_the_mode():
    for mode in q.KEY_MODES:
        job = tasks.noop.enqueue(i=1, key=f"fresh-{mode}", key_mode=mode)
        assert Job.objects.get(pk=job.pk).key == f"fresh-{mode}"
    assert Job.objects.count() == 3


@pytest.mark.django_db
def test_bad_key_modes_are_refused_before_anything_is_written():
    with pytest.raises(InvalidOption, match="key_mode must be one of dedupe, replace, preserve_run_at"):
        tasks.noop.enqueue(key="k", key_mode="upsert")
    with pytest.raises(InvalidOption, match="needs a key"):
        tasks.noop.enqueue(key_mode="replace")
    assert not Job.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", q.KEY_MODES)
def test_with_the_keyed_job_running_a_new_job_is_created_and_keeps_the_key(mode):
    """@pgpm/jobs loses the key here; the running job gives it up when it goes back to pending."""
    running = tasks.noop.enqueue(i=1, key="sync")
    conn = connect()
    try:
        wid = q.register_worker(conn, name="w", host="h", pid=1, queues=None, concurrency=1)
        [claimed] = q.claim(conn, worker_id=wid, worker_name="w", queues=None, limit=1, lease_seconds=30)
        conn.commit()
        newer = tasks.noop.enqueue(i=2, key="sync", key_mode=mode)
        assert newer.pk != running.pk and newer.key == "sync"
        again = tasks.noop.enqueue(i=3, key="sync", key_mode=mode)
        assert again.pk == newer.pk

        failure = q.Failure(
            job_id=claimed.id, attempt=1, error_class="E", error_message="m", traceback="", duration=0
        )
        [retry] = q.fail(conn, worker_id=wid, worker_name="w", failures=[failure])
        conn.commit()
    finally:
        conn.close()
    assert retry.status == Job.Status.PENDING
    assert Job.objects.get(pk=running.pk).key is None  # the retried job gave the key up
    assert [j.pk for j in pending_with("sync")] == [newer.pk]
    expected = {"i": 3} if mode != "dedupe" else {"i": 2}
    assert Job.objects.get(pk=newer.pk).payload == expected


@pytest.mark.django_db
def test_enqueue_many_dedupes_keys_within_the_call_and_against_pending_jobs():
    existing = tasks.noop.enqueue(i=0, key="a")
    jobs = tasks.noop.enqueue_many(
        [{"i": 1, "key": "a"}, {"i": 2, "key": "b"}, {"i": 3, "key": "b"}, {"i": 4}]
    )
    assert jobs[0].pk == existing.pk and jobs[0].payload == {"i": 0}
    assert jobs[1].pk == jobs[2].pk and Job.objects.get(pk=jobs[1].pk).payload == {"i": 2}
    assert jobs[3].key is None
    assert Job.objects.count() == 3


@pytest.mark.django_db
def test_enqueue_many_replace_lets_the_last_call_per_key_win():
    existing = tasks.noop.enqueue(i=0, key="a")
    jobs = enqueue_many(
        "tests.testapp.tasks.noop",
        [{"i": 1, "key": "a"}, {"i": 2, "key": "b"}, {"i": 3, "key": "b"}],
        key_mode="replace",
    )
    assert jobs[0].pk == existing.pk and Job.objects.get(pk=existing.pk).payload == {"i": 1}
    assert jobs[1].pk == jobs[2].pk and Job.objects.get(pk=jobs[1].pk).payload == {"i": 3}
    assert Job.objects.count() == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", q.KEY_MODES)
def test_many_threads_enqueueing_one_key_get_one_pending_job(mode):
    tasks.noop.enqueue(i=-1, key="warm-up-the-queue")
    ids, errors = [], []
    start = threading.Barrier(12)

    def enqueue_one(i):
        try:
            start.wait()
            ids.append(enqueue("tests.testapp.tasks.noop", {"i": i}, key="race", key_mode=mode).pk)
        except Exception as exc:  # noqa: BLE001  collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=enqueue_one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    [job] = pending_with("race")
    assert set(ids) == {job.pk} and len(ids) == 12

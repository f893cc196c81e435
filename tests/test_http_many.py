"""enqueue_http_many: many calls to one HTTP queue, path and method in a constant number of statements.

3,000 ``enqueue_http`` calls in one transaction took 4-6 s (issue 22); the
batch goes through the statement ``enqueue_many`` uses, with enqueue_many's
guarantees: all or nothing, and ``job_enqueued`` once per job.
"""

import json
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import django_supaqueue
from django_supaqueue import enqueue_http_many
from django_supaqueue.exceptions import InvalidOption, InvalidPayload
from django_supaqueue.models import Job, Queue
from django_supaqueue.signals import job_enqueued


def http_queue(url: str = "http://127.0.0.1:9/fn", name: str = "hooks") -> Queue:
    return Queue.objects.create(name=name, http_url=url)


@pytest.mark.django_db
def test_three_thousand_calls_go_in_a_constant_number_of_statements_with_their_path_and_method():
    http_queue()
    payloads = [{"order": i} for i in range(3000)]
    enqueue_http_many("hooks", payloads[:1], path="orders")  # what a receiver looks up once is looked up
    with CaptureQueriesContext(connection) as small:
        enqueue_http_many("hooks", payloads[:3], path="orders", method="PUT")
    with CaptureQueriesContext(connection) as ctx:
        jobs = enqueue_http_many("hooks", payloads, path="orders", method="put")
    assert len(ctx.captured_queries) == len(small.captured_queries) <= 3, [
        q["sql"][:80] for q in ctx.captured_queries
    ]
    assert [j.payload for j in jobs] == payloads
    assert all(
        j.pk and j.task_name == "" and j.http_path == "orders" and j.http_method == "PUT" for j in jobs
    )
    stored = Job.objects.filter(pk__in=[j.pk for j in jobs]).order_by("pk")
    assert list(stored.values_list("payload", flat=True)) == payloads
    assert set(stored.values_list("http_path", "http_method", "task_name", "status")) == {
        ("orders", "PUT", "", "pending")
    }


@pytest.mark.django_db
def test_the_call_s_options_reach_every_job():
    http_queue()
    owner = get_user_model().objects.create_user("owner")
    later = timezone.now() + timedelta(hours=1)
    jobs = enqueue_http_many(
        "hooks",
        [{"a": 1}, {"key": "body data, not a job key"}],
        priority=7,
        run_at=later,
        max_attempts=2,
        owner=owner,
        tenant_id="t1",
    )
    for job in Job.objects.filter(pk__in=[j.pk for j in jobs]):
        assert (job.priority, job.max_attempts, job.owner_id, job.tenant_id) == (7, 2, owner.pk, "t1")
        assert job.run_at == later and job.key is None and job.http_method == "" and job.http_path == ""
    assert jobs[1].payload == {"key": "body data, not a job key"} and jobs[1].owner_id == owner.pk


@pytest.mark.django_db
@pytest.mark.parametrize("bad", [["not", "a", "dict"], {"x": float("nan")}, {"x": object()}, {"x": "\x00"}])
def test_one_bad_payload_refuses_the_whole_batch_and_nothing_is_written(bad):
    http_queue()
    with pytest.raises(InvalidPayload):
        enqueue_http_many("hooks", [{"n": 1}, {"n": 2}, bad, {"n": 4}])
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_a_queue_without_a_url_a_bad_path_or_a_bad_method_refuses_the_batch():
    Queue.objects.create(name="plain")
    http_queue()
    with pytest.raises(InvalidOption, match="not an HTTP queue"):
        enqueue_http_many("plain", [{"n": 1}])
    with pytest.raises(InvalidOption, match="method"):
        enqueue_http_many("hooks", [{"n": 1}], method="TRACE")
    with pytest.raises(InvalidOption):
        enqueue_http_many("hooks", [{"n": 1}], path="../admin")
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_an_empty_batch_writes_nothing():
    http_queue()
    assert enqueue_http_many("hooks", []) == []
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_job_enqueued_is_sent_once_per_job():
    http_queue()
    seen: list[int] = []

    def receiver(sender, job_id, **kwargs):
        seen.append(job_id)

    job_enqueued.connect(receiver, weak=False)
    try:
        jobs = enqueue_http_many("hooks", [{"n": i} for i in range(5)], path="x")
    finally:
        job_enqueued.disconnect(receiver)
    assert seen == [j.pk for j in jobs] and len(set(seen)) == 5


def test_it_is_exported_like_enqueue_http():
    assert "enqueue_http_many" in django_supaqueue.__all__
    assert django_supaqueue.enqueue_http_many is enqueue_http_many


@pytest.mark.django_db(transaction=True)
def test_a_worker_makes_each_call_with_the_batch_s_path_and_method(drain, http_server):
    http_queue(http_server.url + "/fn")
    jobs = enqueue_http_many("hooks", [{"n": 1}, {"n": 2}], path="items/batch", method="PATCH")
    drain(["hooks"])
    assert set(Job.objects.filter(pk__in=[j.pk for j in jobs]).values_list("status", flat=True)) == {
        Job.Status.SUCCESSFUL
    }
    calls = sorted(http_server.requests, key=lambda r: json.loads(r["body"])["n"])
    assert [(c["method"], c["path"], json.loads(c["body"])) for c in calls] == [
        ("PATCH", "/fn/items/batch", {"n": 1}),
        ("PATCH", "/fn/items/batch", {"n": 2}),
    ]
    assert [c["headers"]["X-Supaqueue-Job-Id"] for c in calls] == [str(j.pk) for j in jobs]

"""The example project's app: orders enqueue in their own transaction, and the demo workload finishes."""

import time
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from django_supaqueue.models import Job
from django_supaqueue.testing import assert_enqueued
from example_project.example_app import tasks, workload
from example_project.example_app.models import Order, WarehouseSync
from tests.factories import OrderFactory


def confirmation_jobs(order: Order):
    return Job.objects.filter(
        task_name="example_project.example_app.tasks.confirm_order", key=order.confirmation_key
    )


@pytest.mark.django_db
def test_saving_a_new_order_enqueues_its_confirmation():
    order = OrderFactory()
    (job,) = assert_enqueued(tasks.confirm_order, {"order_id": order.pk}, queue="orders", count=1)
    assert job.key == order.confirmation_key and job.status == Job.Status.PENDING


@pytest.mark.django_db
def test_saving_an_existing_order_enqueues_nothing_more():
    order = OrderFactory()
    order.email = "changed@example.com"
    order.save()
    assert_enqueued(tasks.confirm_order, {"order_id": order.pk}, count=1)


def test_in_immediate_mode_a_new_order_is_confirmed_before_save_returns(supaqueue_immediate):
    order = OrderFactory()
    order.refresh_from_db()
    assert order.status == Order.Status.CONFIRMED
    (job,) = supaqueue_immediate.assert_enqueued(tasks.confirm_order, {"order_id": order.pk})
    assert job.status == Job.Status.SUCCESSFUL and job.result == f"order {order.pk} confirmed"


def test_run_pending_confirms_orders_the_test_never_committed(supaqueue):
    orders = OrderFactory.create_batch(2)
    assert {job.status for job in supaqueue.run_pending(["orders"])} == {Job.Status.SUCCESSFUL}
    assert {o.status for o in Order.objects.filter(pk__in=[o.pk for o in orders])} == {Order.Status.CONFIRMED}


@pytest.mark.django_db
def test_an_order_rolled_back_leaves_no_job():
    with pytest.raises(RuntimeError), transaction.atomic():
        OrderFactory(number="ROLLED-BACK")
        assert Job.objects.filter(key="order:ROLLED-BACK:confirm").exists()
        raise RuntimeError("payment declined")
    assert not Order.objects.exists()
    assert not Job.objects.filter(key="order:ROLLED-BACK:confirm").exists()


@pytest.mark.django_db
def test_an_order_whose_job_cannot_be_written_is_not_saved(monkeypatch):
    def refuse(*args, **kwargs):
        raise ConnectionError("queue unavailable")

    monkeypatch.setattr("example_project.example_app.models.enqueue", refuse)
    with pytest.raises(ConnectionError):
        OrderFactory(number="NO-JOB")
    assert not Order.objects.filter(number="NO-JOB").exists()


@pytest.mark.django_db(transaction=True)
def test_the_confirmation_job_confirms_the_order(drain):
    order = OrderFactory()
    drain()
    order.refresh_from_db()
    assert order.status == Order.Status.CONFIRMED and order.confirmed_at is not None
    assert confirmation_jobs(order).get().status == Job.Status.SUCCESSFUL


@pytest.mark.django_db
def test_inventory_sync_fails_until_the_warehouse_answers():
    sync = WarehouseSync.objects.create(name="test")
    for call in range(1, tasks.WAREHOUSE_FAILURES + 1):
        with pytest.raises(ConnectionError, match=f"call {call}"):
            tasks.sync_inventory(sync.pk)
    assert tasks.sync_inventory(sync.pk) == f"stock synced after {tasks.WAREHOUSE_FAILURES + 1} calls"
    sync.refresh_from_db()
    assert sync.synced_at is not None


@pytest.mark.django_db
def test_enqueueing_the_workload_again_adds_no_pending_duplicates():
    keys = workload.enqueue_workload()
    pending = Job.objects.filter(status=Job.Status.PENDING).count()
    assert workload.enqueue_workload() == keys
    assert Job.objects.filter(status=Job.Status.PENDING).count() == pending == len(keys) == len(set(keys))


@pytest.mark.django_db
def test_the_demo_reminder_waits_for_its_run_at():
    workload.enqueue_workload()
    reminder = Job.objects.get(key="demo:reminder")
    assert reminder.run_at > timezone.now() + timedelta(seconds=1)


@pytest.mark.django_db(transaction=True)
def test_the_demo_workload_runs_to_completion(drain):
    since = timezone.now()
    keys = workload.enqueue_workload()
    deadline = time.monotonic() + 30
    while not workload.is_finished(jobs := workload.newest_jobs(keys)):
        assert time.monotonic() < deadline, [(job.key, job.status) for job in jobs]
        drain()
        time.sleep(0.2)
    assert {job.status for job in jobs} == {Job.Status.SUCCESSFUL}
    assert {job.key: job.attempts for job in jobs}["demo:inventory-sync"] == tasks.WAREHOUSE_FAILURES + 1
    progress = workload.queue_progress(since)
    assert {queue: counts["successful"] for queue, counts in progress.items()} == {
        "default": 6,
        "emails": 7,
        "orders": 3,
    }


@pytest.mark.django_db
def test_the_once_report_names_each_job_that_did_not_succeed(capsys):
    from example_project import demo

    keys = workload.enqueue_workload()
    Job.objects.filter(key="demo:inventory-sync").update(
        status=Job.Status.FAILED, attempts=5, last_error="ConnectionError: warehouse API unavailable"
    )
    Job.objects.exclude(key="demo:inventory-sync").update(status=Job.Status.SUCCESSFUL)
    assert demo.report(workload.newest_jobs(keys), elapsed=1.0) == 1
    out = capsys.readouterr().out
    assert "demo workload FAILED: 1 of 16 jobs did not succeed" in out
    assert "demo:inventory-sync: failed after 5 attempts: ConnectionError: warehouse API unavailable" in out

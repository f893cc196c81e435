"""The example project's app: orders enqueue in their own transaction, its webhook wants the shared
secret, and the demo workload (the HTTP queue calling that webhook included) finishes."""

import http.server
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from django_supaqueue.models import Job, JobEvent, Queue
from django_supaqueue.testing import assert_enqueued
from example_project.example_app import tasks, views, workload
from example_project.example_app.models import Order, WarehouseSync
from example_project.processes import ChildFailed, free_port, wait_until_answering
from tests.factories import OrderFactory

#: Where the run command would serve the example; tests that call the webhook use live_server's URL.
SITE = "http://127.0.0.1:8000"
WEBHOOK = "/demo/webhook/"
SECRET = "test-webhook-secret"


@pytest.fixture
def webhook_secret(settings):
    """The webhook's secret in SUPAQUEUE["HTTP_SECRETS"], as the example's settings put it there."""
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "HTTP_SECRETS": {views.SECRET_ALIAS: SECRET}}
    return SECRET


def call_webhook(client, body, secret=None, **kwargs):
    headers = {views.SECRET_HEADER: secret} if secret is not None else {}
    return client.post(WEBHOOK, body, content_type="application/json", headers=headers, **kwargs)


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
    keys = workload.enqueue_workload(SITE)
    pending = Job.objects.filter(status=Job.Status.PENDING).count()
    assert workload.enqueue_workload(SITE) == keys
    assert Job.objects.filter(status=Job.Status.PENDING).count() == pending == len(keys) == len(set(keys))


@pytest.mark.django_db
def test_the_demo_reminder_waits_for_its_run_at():
    workload.enqueue_workload(SITE)
    reminder = Job.objects.get(key="demo:reminder")
    assert reminder.run_at > timezone.now() + timedelta(seconds=1)


@pytest.mark.django_db
def test_the_workload_creates_a_rate_limited_http_queue_calling_the_site_it_is_given():
    workload.enqueue_workload(SITE)
    queue = Queue.objects.get(name=workload.WEBHOOK_QUEUE)
    assert queue.http_url == f"{SITE}/demo/" and queue.http_method == "POST"
    assert (queue.http_secret, queue.http_secret_header) == (views.SECRET_ALIAS, views.SECRET_HEADER)
    assert (queue.rate_limit, queue.rate_period) == (2, 1.0)
    calls = Job.objects.filter(queue=queue)
    assert calls.count() == len(workload.PARCELS) == 6
    assert {job.http_path for job in calls} == {workload.WEBHOOK_PATH}
    assert {(job.payload["order"], job.payload["parcel"]) for job in calls} == set(workload.PARCELS)


@pytest.mark.django_db
def test_a_later_run_moves_the_http_queue_to_its_port_and_keeps_the_admins_settings():
    workload.enqueue_workload(SITE)
    Queue.objects.filter(name=workload.WEBHOOK_QUEUE).update(rate_limit=5)
    workload.point_webhook_queue("http://127.0.0.1:8123")
    queue = Queue.objects.get(name=workload.WEBHOOK_QUEUE)
    assert queue.http_url == "http://127.0.0.1:8123/demo/" and queue.rate_limit == 5


@pytest.mark.django_db(transaction=True)
@pytest.mark.urls("example_project.urls")
def test_the_demo_workload_runs_to_completion(drain, live_server, webhook_secret):
    since = timezone.now()
    keys = workload.enqueue_workload(live_server.url)
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
        "webhooks": 6,
    }


@pytest.mark.django_db(transaction=True)
@pytest.mark.urls("example_project.urls")
def test_the_http_queue_books_each_parcel_through_the_webhook(drain, live_server, webhook_secret):
    keys = workload.enqueue_workload(live_server.url)
    parcels = [key for key in keys if key.startswith("demo:parcel:")]
    deadline = time.monotonic() + 30
    while not workload.is_finished(jobs := workload.newest_jobs(parcels)):
        assert time.monotonic() < deadline, [(job.key, job.status) for job in jobs]
        drain([workload.WEBHOOK_QUEUE])
        time.sleep(0.2)
    assert {job.status for job in jobs} == {Job.Status.SUCCESSFUL}
    for job in jobs:
        order, parcel = job.payload["order"], job.payload["parcel"]
        assert job.result == {
            "status": 200,
            "body": {"order": order, "parcel": parcel, "tracking": f"TRK-{order}-{parcel}"},
        }
    assert workload.http_answers(jobs) == {200: len(workload.PARCELS)}
    events = JobEvent.objects.filter(job__in=jobs)
    assert SECRET not in repr(list(events.values())) + repr([(j.payload, j.result) for j in jobs])


@pytest.mark.django_db
def test_the_once_report_names_each_job_that_did_not_succeed(capsys):
    from example_project import demo

    keys = workload.enqueue_workload(SITE)
    Job.objects.filter(key="demo:inventory-sync").update(
        status=Job.Status.FAILED, attempts=5, last_error="ConnectionError: warehouse API unavailable"
    )
    Job.objects.exclude(key="demo:inventory-sync").update(status=Job.Status.SUCCESSFUL)
    assert demo.report(workload.newest_jobs(keys), elapsed=1.0) == 1
    out = capsys.readouterr().out
    assert "demo workload FAILED: 1 of 22 jobs did not succeed" in out
    assert "demo:inventory-sync: failed after 5 attempts: ConnectionError: warehouse API unavailable" in out


@pytest.mark.django_db
def test_a_finished_run_reports_the_http_statuses_its_calls_got(capsys):
    from example_project import demo

    keys = workload.enqueue_workload(SITE)
    Job.objects.update(status=Job.Status.SUCCESSFUL, attempts=1)
    for job in Job.objects.filter(queue__name=workload.WEBHOOK_QUEUE):
        JobEvent.objects.create(job=job, kind=JobEvent.Kind.SUCCEEDED, attempt=1, http_status=200)
    assert demo.report(workload.newest_jobs(keys), elapsed=1.0) == 0
    out = capsys.readouterr().out
    assert "all 22 jobs successful (default 6, emails 7, orders 3, webhooks 6)" in out
    assert "HTTP calls answered: 6 x HTTP 200" in out


# -- the webhook the HTTP queue calls -----------------------------------------------------------

webhook_urls = pytest.mark.urls("example_project.urls")


@webhook_urls
def test_the_webhook_answers_a_call_with_the_secret_in_json(client, webhook_secret):
    response = call_webhook(client, {"order": "DEMO-1", "parcel": 2}, secret=SECRET)
    assert response.status_code == 200
    assert response.json() == {"order": "DEMO-1", "parcel": 2, "tracking": "TRK-DEMO-1-2"}


@webhook_urls
def test_the_webhook_refuses_a_call_without_the_secret_header(client, webhook_secret):
    response = call_webhook(client, {"order": "DEMO-1", "parcel": 1})
    assert response.status_code == 401 and "tracking" not in response.json()


@webhook_urls
@pytest.mark.parametrize("sent", ["wrong", SECRET[:-1], SECRET + "x", SECRET.upper(), "é" * 3])
def test_the_webhook_refuses_a_wrong_secret(client, webhook_secret, sent):
    response = call_webhook(client, {"order": "DEMO-1", "parcel": 1}, secret=sent)
    assert response.status_code == 403 and "tracking" not in response.json()


@webhook_urls
def test_the_webhook_refuses_every_call_when_no_secret_is_configured(client, settings):
    settings.SUPAQUEUE = {**settings.SUPAQUEUE, "HTTP_SECRETS": {}}
    assert call_webhook(client, {"order": "DEMO-1", "parcel": 1}, secret="anything").status_code == 403


@webhook_urls
def test_the_webhook_compares_the_secret_in_constant_time(client, webhook_secret, monkeypatch):
    compared = []
    real = views.constant_time_compare

    def recording(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(views, "constant_time_compare", recording)
    assert call_webhook(client, {"order": "DEMO-1", "parcel": 1}, secret="guess").status_code == 403
    assert call_webhook(client, {"order": "DEMO-1", "parcel": 1}, secret=SECRET).status_code == 200
    assert compared == [("guess", SECRET), (SECRET, SECRET)]


@webhook_urls
@pytest.mark.parametrize("body", ["not json", "[1, 2]", '{"order": "DEMO-1"}', '{"order": 5, "parcel": 1}'])
def test_the_webhook_answers_400_to_a_body_that_is_not_a_parcel(client, webhook_secret, body):
    response = call_webhook(client, body, secret=SECRET)
    assert response.status_code == 400 and "error" in response.json()


@webhook_urls
def test_the_webhook_takes_only_post(client, webhook_secret):
    response = client.get(WEBHOOK, headers={views.SECRET_HEADER: SECRET})
    assert response.status_code == 405


# -- the run command's web server ----------------------------------------------------------------


def test_the_web_server_is_ready_once_it_answers_any_status():
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        wait_until_answering(child, f"http://127.0.0.1:{server.server_port}/admin/login/", timeout=5)
    finally:
        server.shutdown()
        child.kill()
        child.wait()


def test_a_web_server_that_exits_before_answering_fails_the_run():
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(ChildFailed, match="exited with status 3 before it answered"):
        wait_until_answering(child, f"http://127.0.0.1:{free_port(0)}/", timeout=30)


def test_a_web_server_that_never_answers_fails_the_run_after_the_timeout():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(ChildFailed, match="did not answer"):
            wait_until_answering(child, f"http://127.0.0.1:{free_port(0)}/", timeout=0.5)
    finally:
        child.kill()
        child.wait()

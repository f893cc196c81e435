"""The example project's app: orders enqueue in their own transaction, its webhook wants the shared
secret, its cron schedule fires, its pipeline runs in order, and the demo workload (the HTTP queue
calling that webhook included) finishes."""

import http.server
import io
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from django_supaqueue import scheduling
from django_supaqueue.models import Job, JobDependency, JobEvent, Queue
from django_supaqueue.testing import assert_enqueued
from example_project import settings as example_settings
from example_project.example_app import tasks, views, workload
from example_project.example_app.models import Order, WarehouseSync
from example_project.processes import ChildFailed, free_port, wait_until_answering
from tests.factories import OrderFactory

#: Where the run command would serve the example; tests that call the webhook use live_server's URL.
SITE = "http://127.0.0.1:8000"
WEBHOOK = "/demo/webhook/"
SECRET = "test-webhook-secret"
#: Successful jobs per queue once the workload has run: its 27 keyed jobs and the report schedule's job.
WORKLOAD_QUEUES = {"default": 7, "emails": 8, "orders": 6, "webhooks": 7}
REPORT_TASK = "example_project.example_app.tasks.report_orders"


@pytest.fixture(autouse=True)
def example_schedules(settings):
    """The schedules the example's settings declare; only ever fired by hand or by ``fire_due(now=...)``.

    Workers here fire nothing by the clock (SCHEDULE_INTERVAL None): a test that
    crossed a minute would otherwise see a second report job.
    """
    settings.SUPAQUEUE = {
        **settings.SUPAQUEUE,
        "SCHEDULES": example_settings.SUPAQUEUE["SCHEDULES"],
        "SCHEDULE_INTERVAL": None,
    }


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


def unfinished_jobs() -> int:
    return Job.objects.exclude(status__in=workload.FINISHED).count()


@pytest.mark.django_db
def test_enqueueing_the_workload_again_adds_no_duplicates_of_unfinished_jobs():
    keys = workload.enqueue_workload(SITE)
    unfinished = unfinished_jobs()
    assert workload.enqueue_workload(SITE) == keys
    assert unfinished_jobs() == unfinished == len(keys) + 1 == len(set(keys)) + 1  # + the report's job


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
    calls = Job.objects.filter(queue=queue, key__startswith="demo:parcel:")
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
    jobs = drain_until_finished(drain, lambda: workload.workload_jobs(keys))
    assert {job.status for job in jobs} == {Job.Status.SUCCESSFUL}
    assert {job.key: job.attempts for job in jobs}["demo:inventory-sync"] == tasks.WAREHOUSE_FAILURES + 1
    assert REPORT_TASK in {job.task_name for job in jobs}
    progress = workload.queue_progress(since)
    assert {queue: counts["successful"] for queue, counts in progress.items()} == WORKLOAD_QUEUES


def drain_until_finished(drain, read_jobs: Callable[[], list[Job]]) -> list[Job]:
    """Burst workers until every job ``read_jobs`` returns has finished (retries, delays and rate limits
    take several bursts); those jobs."""
    deadline = time.monotonic() + 30
    while not workload.is_finished(jobs := read_jobs()):
        assert time.monotonic() < deadline, [(job.key, job.status) for job in jobs]
        drain()
        time.sleep(0.2)
    return jobs


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
    assert demo.report(workload.workload_jobs(keys), elapsed=1.0) == 1
    out = capsys.readouterr().out
    assert "demo workload FAILED: 1 of 28 jobs did not succeed" in out
    assert "demo:inventory-sync: failed after 5 attempts: ConnectionError: warehouse API unavailable" in out


@pytest.mark.django_db
def test_a_finished_run_reports_the_http_statuses_its_calls_got(capsys):
    from example_project import demo

    keys = workload.enqueue_workload(SITE)
    Job.objects.update(status=Job.Status.SUCCESSFUL, attempts=1)
    for job in Job.objects.filter(queue__name=workload.WEBHOOK_QUEUE):
        JobEvent.objects.create(job=job, kind=JobEvent.Kind.SUCCEEDED, attempt=1, http_status=200)
    assert demo.report(workload.workload_jobs(keys), elapsed=1.0) == 0
    out = capsys.readouterr().out
    assert "all 28 jobs successful (default 7, emails 8, orders 6, webhooks 7)" in out
    assert "HTTP calls answered: 7 x HTTP 200" in out


@pytest.mark.django_db
def test_the_once_report_says_what_the_pipeline_returned_and_when_the_schedule_runs(capsys):
    from example_project import demo

    keys = workload.enqueue_workload(SITE)
    mail_key = workload.fulfilment_keys(workload.FULFILMENT_ORDER)["mail"]
    Job.objects.update(status=Job.Status.SUCCESSFUL, attempts=1)
    Job.objects.filter(key=mail_key).update(result="shipping mail for order DEMO-1 sent")
    schedule = workload.report_schedule()
    assert demo.report(workload.workload_jobs(keys), elapsed=1.0) == 0
    out = capsys.readouterr().out
    assert "pipeline for order DEMO-1: reserve stock + charge payment -> ship" in out
    assert "the last step returned 'shipping mail for order DEMO-1 sent'" in out
    fired = workload.last_report_tick().fired_at
    assert (
        f"schedule 'orders-report' (* * * * *, UTC): last run {fired:%H:%M:%S} by hand, "
        f"job {schedule.last_job_id} successful; next run {schedule.next_run_at:%H:%M:%S}"
    ) in out


# -- the cron schedule ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_example_declares_a_report_schedule_that_runs_every_minute():
    scheduling.sync_declared()
    schedule = workload.report_schedule()
    assert (schedule.task_name, schedule.cron, schedule.origin) == (REPORT_TASK, "* * * * *", "code")
    assert schedule.enabled and schedule.next_run_at - timezone.now() <= timedelta(minutes=1)


@pytest.mark.django_db
def test_the_workload_runs_the_report_now_and_leaves_its_cadence_alone():
    scheduling.sync_declared()
    next_run_at = workload.report_schedule().next_run_at
    workload.enqueue_workload(SITE)
    schedule = workload.report_schedule()
    (tick,) = schedule.ticks.all()
    assert tick.manual and tick.job_id == schedule.last_job_id
    assert Job.objects.get(pk=tick.job_id).task_name == REPORT_TASK
    assert schedule.next_run_at == next_run_at


@pytest.mark.django_db
def test_a_rerun_runs_the_report_again_only_once_its_last_job_finished():
    workload.enqueue_workload(SITE)
    workload.enqueue_workload(SITE)
    schedule = workload.report_schedule()
    assert schedule.ticks.count() == 1
    Job.objects.filter(pk=schedule.last_job_id).update(status=Job.Status.SUCCESSFUL)
    workload.enqueue_workload(SITE)
    assert schedule.ticks.count() == 2
    assert Job.objects.filter(task_name=REPORT_TASK, status=Job.Status.PENDING).count() == 1


@pytest.mark.django_db
def test_the_report_schedule_fires_at_each_minute_by_the_clock():
    scheduling.sync_declared()
    first = workload.report_schedule().next_run_at
    assert scheduling.fire_due(now=first - timedelta(seconds=1)) == []
    (tick,) = scheduling.fire_due(now=first + timedelta(seconds=1))
    assert not tick.manual and tick.tick_at == first
    assert Job.objects.get(pk=tick.job_id).task_name == REPORT_TASK
    schedule = workload.report_schedule()
    assert schedule.last_run_at == first and schedule.next_run_at == first + timedelta(minutes=1)
    assert [t.tick_at for t in scheduling.fire_due(now=first + timedelta(minutes=1))] == [
        first + timedelta(minutes=1)
    ]


def test_the_report_counts_orders_by_status(supaqueue):
    OrderFactory.create_batch(2)
    confirmed = OrderFactory()
    tasks.confirm_order(confirmed.pk)
    assert tasks.report_orders() == {"new": 2, "confirmed": 1}


# -- the fulfilment pipeline ---------------------------------------------------------------------


def fulfilment_jobs() -> dict[str, Job]:
    keys = workload.fulfilment_keys(workload.FULFILMENT_ORDER)
    return {step: Job.objects.get(key=key) for step, key in keys.items()}


def parents(job: Job) -> list[int]:
    links = JobDependency.objects.filter(job=job).order_by("position")
    return list(links.values_list("depends_on_id", flat=True))


@pytest.mark.django_db
def test_the_pipeline_fans_in_to_ship_then_chains_booking_and_mail():
    workload.enqueue_workload(SITE)
    steps = fulfilment_jobs()
    assert {s: job.status for s, job in steps.items()} == {
        "reserve": Job.Status.PENDING,
        "charge": Job.Status.PENDING,
        "ship": Job.Status.WAITING,
        "book": Job.Status.WAITING,
        "mail": Job.Status.WAITING,
    }
    assert parents(steps["ship"]) == [steps["reserve"].pk, steps["charge"].pk]
    assert parents(steps["book"]) == [steps["ship"].pk]
    assert parents(steps["mail"]) == [steps["book"].pk]
    assert steps["book"].queue.name == workload.WEBHOOK_QUEUE
    assert steps["book"].payload == {"order": "DEMO-1", "parcel": workload.FULFILMENT_PARCEL}


@pytest.mark.django_db
def test_a_rerun_while_the_pipeline_is_part_done_enqueues_none_of_its_steps():
    keys = workload.enqueue_workload(SITE)
    done = fulfilment_jobs()
    Job.objects.filter(pk__in=[done["reserve"].pk, done["charge"].pk]).update(status=Job.Status.SUCCESSFUL)
    assert workload.enqueue_workload(SITE) == keys
    assert fulfilment_jobs() == done  # get() would raise had any step a second job


@pytest.mark.django_db
def test_a_rerun_after_the_pipeline_finished_enqueues_it_afresh():
    workload.enqueue_workload(SITE)
    first = fulfilment_jobs()
    Job.objects.filter(pk__in=[job.pk for job in first.values()]).update(status=Job.Status.SUCCESSFUL)
    workload.enqueue_workload(SITE)
    keys = list(workload.fulfilment_keys(workload.FULFILMENT_ORDER).values())
    newest = {job.key: job for job in workload.newest_jobs(keys)}
    assert {job.status for job in newest.values()} == {Job.Status.PENDING, Job.Status.WAITING}
    assert not {job.pk for job in newest.values()} & {job.pk for job in first.values()}


@pytest.mark.django_db(transaction=True)
@pytest.mark.urls("example_project.urls")
def test_the_ship_step_runs_after_both_parents_and_reads_their_results(drain, live_server, webhook_secret):
    workload.point_webhook_queue(live_server.url)
    keys = workload.enqueue_fulfilment(workload.FULFILMENT_ORDER)
    jobs = {
        job.key.rsplit(":", 1)[1]: job
        for job in drain_until_finished(drain, lambda: workload.newest_jobs(keys))
    }
    assert {job.status for job in jobs.values()} == {Job.Status.SUCCESSFUL}
    reserve, charge, ship, book, mail = (jobs[step] for step in workload.FULFILMENT_STEPS)
    assert ship.started_at >= max(reserve.finished_at, charge.finished_at)
    assert ship.result == {"order": "DEMO-1", "items": 3, "charge": "CH-DEMO-1"}
    assert book.started_at >= ship.finished_at and mail.started_at >= book.finished_at
    assert book.result["body"]["tracking"] == f"TRK-DEMO-1-{workload.FULFILMENT_PARCEL}"
    assert (
        mail.result
        == f"shipping mail for order DEMO-1 sent, tracking TRK-DEMO-1-{workload.FULFILMENT_PARCEL}"
    )


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


# -- what the demo prints ------------------------------------------------------------------------


@pytest.fixture
def example_console():
    """The example settings' console filter on a handler of the queue's logger: what the demo prints."""
    from django.utils.module_loading import import_string

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    for name in example_settings.LOGGING["handlers"]["console"]["filters"]:
        handler.addFilter(import_string(example_settings.LOGGING["filters"][name]["()"])())
    package = logging.getLogger("django_supaqueue")
    package.addHandler(handler)
    try:
        yield stream
    finally:
        package.removeHandler(handler)


@pytest.mark.django_db(transaction=True)
def test_the_demos_failures_on_purpose_read_as_expected(drain, example_console):
    sync = WarehouseSync.objects.create(name="test")
    job = tasks.sync_inventory.enqueue(sync.pk)
    drain_until_finished(drain, lambda: [Job.objects.get(pk=job.pk)])
    lines = [line for line in example_console.getvalue().splitlines() if f"job {job.pk} " in line]
    failed = [line for line in lines if " failed: " in line]
    assert len(failed) == tasks.WAREHOUSE_FAILURES
    for line in failed:
        assert line.startswith("expected failure (demonstrates retries): ") and "ConnectionError" in line


def test_a_failure_for_good_is_not_marked_expected():
    from example_project.example_app.logs import MarkExpectedFailures

    extra = {"task": "example_project.example_app.tasks.sync_inventory", "levelno": logging.ERROR}
    final = logging.makeLogRecord({"msg": "job 1 failed for good", "outcome": "failed", **extra})
    retry = logging.makeLogRecord({"msg": "job 1 attempt 1 failed", "outcome": "retry", **extra})
    assert MarkExpectedFailures().filter(final) and final.getMessage() == "job 1 failed for good"
    assert MarkExpectedFailures().filter(retry) and retry.levelno == logging.INFO
    assert retry.getMessage() == "expected failure (demonstrates retries): job 1 attempt 1 failed"


@pytest.mark.django_db
def test_a_rerun_says_how_to_reset_the_admin_password(capsys, monkeypatch):
    from example_project import demo

    monkeypatch.setenv("DATABASE_URL", "postgres://demo@127.0.0.1:5432/demo")
    demo.ensure_admin()
    assert "created the demo admin login (shown only this once): admin / " in capsys.readouterr().out
    demo.ensure_admin()
    out = capsys.readouterr().out
    assert "made by an earlier run" in out and "Forgot it?" in out
    assert "DATABASE_URL='postgres://demo@127.0.0.1:5432/demo' " in out
    assert out.rstrip().endswith("manage.py changepassword admin")


@pytest.mark.django_db
def test_the_schedules_next_run_is_never_printed_in_the_past():
    from example_project import demo

    scheduling.sync_declared()
    schedule = workload.report_schedule()
    now = timezone.now()
    schedule.next_run_at = now - timedelta(hours=2)  # the demo was stopped for two hours
    line = demo.next_run(schedule, now)
    upcoming = schedule.timing().next_after(now)
    assert (
        line
        == f"next run due now (missed while no worker ran: the workers fire it), then {upcoming:%H:%M:%S}"
    )
    assert f"{schedule.next_run_at:%H:%M:%S}" not in line
    schedule.next_run_at = upcoming
    assert demo.next_run(schedule, now) == f"next run {upcoming:%H:%M:%S}"


@pytest.mark.django_db(transaction=True)
def test_a_reruns_summary_counts_only_its_own_jobs(capsys):
    from example_project import demo

    workload.enqueue_workload(SITE)
    Job.objects.update(status=Job.Status.SUCCESSFUL, attempts=1)  # the first run finished
    since = workload.run_started()
    keys = workload.enqueue_workload(SITE)
    Job.objects.filter(created_at__gte=since).update(status=Job.Status.SUCCESSFUL, attempts=1)
    jobs = workload.workload_jobs(keys, since)
    created = Job.objects.filter(created_at__gte=since).count()
    # The orders exist already: their confirmations are the first run's, not this one's.
    assert len(jobs) == created == sum(WORKLOAD_QUEUES.values()) - len(workload.ORDER_NUMBERS)
    assert demo.report(jobs, elapsed=1.0) == 0
    assert (
        f"all {created} jobs successful (default 7, emails 8, orders 3, webhooks 7)"
        in capsys.readouterr().out
    )
    progress = workload.queue_progress(since)
    assert sum(counts["successful"] for counts in progress.values()) == created
    assert demo.describe_enqueued(keys, since).startswith(f"enqueued the demo workload ({created} jobs")
    assert "3 more were already there" in demo.describe_enqueued(keys, since)

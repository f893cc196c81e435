"""The job screens: a list that never counts the table, filters, search, a job's life cycle, and actions."""

from datetime import timedelta

import pytest
from django.contrib.admin.models import DELETION, LogEntry
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_supaqueue.admin import job_actions
from django_supaqueue.admin.jobs import JobAdmin
from django_supaqueue.models import Job, JobEvent
from tests.factories import CurrentJobFactory, JobEventFactory, JobFactory, QueueFactory

pytestmark = pytest.mark.django_db

LIST = reverse("admin:supaqueue_job_changelist")


def change_url(job):
    return reverse("admin:supaqueue_job_change", args=[job.pk])


def listed_ids(response):
    return [job.pk for job in response.context["cl"].result_list]


def act(client, action, jobs, url=LIST, **extra):
    data = {"action": action, "index": 0, "_selected_action": [str(j.pk) for j in jobs], **extra}
    return client.post(url, data, follow=True)


def test_the_list_shows_status_queue_task_attempts_and_age(admin_client):
    JobFactory(status="failed", attempts=3, max_attempts=3, queue=QueueFactory(name="emails"))
    JobFactory(enabled=False)
    page = admin_client.get(LIST).content.decode()
    assert 'class="sq-badge sq-failed">Failed<' in page and "Held" in page
    assert "emails" in page and "3/3" in page and ">noop<" in page


def test_the_list_never_counts_the_job_table(admin_client):
    JobFactory.create_batch(3)
    with CaptureQueriesContext(connection) as queries:
        assert admin_client.get(LIST, {"status__exact": "pending"}).status_code == 200
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper() and "supaqueue_job" in q["sql"]]
    assert counts == []


def test_pages_go_by_id_with_next_and_previous_links(admin_client, monkeypatch):
    monkeypatch.setattr(JobAdmin, "list_per_page", 2)
    ids = [j.pk for j in JobFactory.create_batch(5)][::-1]
    first = admin_client.get(LIST)
    assert listed_ids(first) == ids[:2]
    cl = first.context["cl"]
    assert cl.previous_url == "" and cl.next_url == f"?after={ids[1]}"
    second = admin_client.get(LIST + cl.next_url)
    assert listed_ids(second) == ids[2:4]
    third = admin_client.get(LIST + second.context["cl"].next_url)
    assert listed_ids(third) == ids[4:] and third.context["cl"].next_url == ""
    back = admin_client.get(LIST + third.context["cl"].previous_url)
    assert listed_ids(back) == ids[2:4] and back.context["cl"].previous_url


def test_oldest_first_pages_the_other_way(admin_client, monkeypatch):
    monkeypatch.setattr(JobAdmin, "list_per_page", 2)
    ids = [j.pk for j in JobFactory.create_batch(3)]
    first = admin_client.get(LIST, {"o": "1"})
    assert listed_ids(first) == ids[:2]
    assert listed_ids(admin_client.get(LIST + first.context["cl"].next_url)) == ids[2:]


def test_the_total_is_exact_on_one_page_and_estimated_beyond(admin_client, monkeypatch):
    JobFactory.create_batch(3)
    assert "3 jobs" in admin_client.get(LIST).content.decode()
    monkeypatch.setattr(JobAdmin, "list_per_page", 2)
    response = admin_client.get(LIST)
    assert not response.context["cl"].count.exact and "(estimated)" in response.content.decode()


def test_only_the_id_column_sorts(admin_client):
    JobFactory()
    response = admin_client.get(LIST, {"o": "3"})  # the queue column: not sortable, so ignored
    assert response.context["cl"].queryset.query.order_by[0] in ("-id", "-pk")


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"status__exact": "failed"}, ["failed"]),
        ({"task": "tests.testapp.tasks.add"}, ["add"]),
        ({"held": "yes"}, ["held"]),
        ({"created": "1h"}, ["pending", "failed", "add", "held", "emails"]),
        ({"created": "old"}, ["old"]),
    ],
)
def test_filters(admin_client, params, expected):
    made = {
        "pending": JobFactory(),
        "failed": JobFactory(status="failed"),
        "add": JobFactory(task_name="tests.testapp.tasks.add"),
        "held": JobFactory(enabled=False),
        "emails": JobFactory(queue=QueueFactory(name="emails")),
        "old": JobFactory(),
    }
    Job.objects.filter(pk=made["old"].pk).update(created_at=timezone.now() - timedelta(days=30))
    found = set(listed_ids(admin_client.get(LIST, params)))
    assert found == {made[name].pk for name in expected}


def test_the_queue_filter(admin_client):
    emails = JobFactory(queue=QueueFactory(name="emails"))
    JobFactory()
    assert listed_ids(admin_client.get(LIST, {"queue__id__exact": emails.queue_id})) == [emails.pk]


@pytest.mark.parametrize("term", ["{id}", "#{id}", "order:42", "tests.testapp.tasks.add", "add"])
def test_search_by_id_key_or_task_name(admin_client, term):
    wanted = JobFactory(task_name="tests.testapp.tasks.add", key="order:42")
    JobFactory(task_name="tests.testapp.tasks.noop", key="order:43")
    assert listed_ids(admin_client.get(LIST, {"q": term.format(id=wanted.pk)})) == [wanted.pk]


def test_a_jobs_page_shows_payload_result_and_its_whole_life_cycle(admin_client):
    job = JobFactory(status="successful", attempts=2, payload={"user_id": 42}, result={"sent": True})
    JobEventFactory(job=job, kind="started", attempt=1, worker_name="web-1:99:abc")
    JobEventFactory(
        job=job,
        kind="retried",
        attempt=1,
        duration=1.5,
        error_class="TimeoutError",
        error_message="smtp timed out",
        traceback="Traceback (most recent call last):\n  boom",
    )
    JobEventFactory(job=job, kind="succeeded", attempt=2, duration=0.25)
    page = admin_client.get(change_url(job)).content.decode()
    assert "&quot;user_id&quot;: 42" in page and "&quot;sent&quot;: true" in page
    for text in ("Enqueued", "Started", "Failed, will retry", "Succeeded", "web-1:99:abc", "1.5 s", "250 ms"):
        assert text in page
    assert "TimeoutError" in page and "smtp timed out" in page and "Traceback (most recent call last)" in page


def test_a_running_jobs_page_links_its_worker_and_offers_cancel_not_delete(admin_client):
    lease = CurrentJobFactory()
    response = admin_client.get(change_url(lease.job))
    page = response.content.decode()
    assert reverse("admin:supaqueue_worker_change", args=[lease.worker_id]) in page
    assert [a["name"] for a in response.context["job_actions"]] == ["cancel"]


@pytest.mark.parametrize(
    "job_kwargs, offered",
    [
        ({"status": "failed", "attempts": 3}, ["retry_now", "delete_selected"]),
        ({}, ["run_now", "reschedule", "cancel", "hold", "delete_selected"]),
        ({"enabled": False}, ["run_now", "reschedule", "cancel", "release_hold", "delete_selected"]),
    ],
)
def test_a_jobs_page_offers_the_actions_that_apply_to_its_state(admin_client, job_kwargs, offered):
    job = JobFactory(**job_kwargs)
    assert [a["name"] for a in admin_client.get(change_url(job)).context["job_actions"]] == offered


def test_retry_now_from_the_list(admin_client):
    failed = JobFactory(status="failed", attempts=5, max_attempts=5)
    done = JobFactory(status="successful")
    response = act(admin_client, "retry_now", [failed, done])
    failed.refresh_from_db()
    assert failed.status == "pending" and failed.max_attempts == 6
    text = [str(m) for m in response.context["messages"]]
    assert text == [
        "Retried 1 job. 1 other was left alone: only failed or cancelled jobs, and jobs waiting to retry, "
        "can be retried."
    ]
    event = JobEvent.objects.get(job=failed)
    assert event.kind == "manual_retry" and event.error_message == "by admin in the admin"


@pytest.mark.parametrize(
    "action, job_kwargs, check",
    [
        ("run_now", {"run_at": timezone.now() + timedelta(days=1)}, lambda j: j.run_at <= timezone.now()),
        ("cancel", {}, lambda j: j.status == "cancelled"),
        ("hold", {}, lambda j: not j.enabled),
        ("release_hold", {"enabled": False}, lambda j: j.enabled),
    ],
)
def test_each_action_changes_the_job_and_writes_an_event(admin_client, action, job_kwargs, check):
    job = JobFactory(**job_kwargs)
    act(admin_client, action, [job])
    job.refresh_from_db()
    assert check(job)
    assert JobEvent.objects.filter(job=job).count() == 1


def test_select_all_acts_on_every_job_matching_the_filter_in_batches(admin_client, monkeypatch):
    monkeypatch.setattr(job_actions, "BATCH_SIZE", 2)
    monkeypatch.setattr(JobAdmin, "list_per_page", 2)
    failed = JobFactory.create_batch(5, status="failed")
    other = JobFactory(status="cancelled")
    calls = []
    original = job_actions.queue.retry_now
    monkeypatch.setattr(
        job_actions.queue, "retry_now", lambda ids, **kw: calls.append(ids) or original(ids, **kw)
    )
    page = failed[-2:]
    act(admin_client, "retry_now", page, url=LIST + "?status__exact=failed", select_across=1)
    assert Job.objects.filter(pk__in=[j.pk for j in failed], status="pending").count() == 5
    assert [len(ids) for ids in calls] == [2, 2, 1]
    other.refresh_from_db()
    assert other.status == "cancelled"


def test_delete_asks_first_then_deletes_and_records_it(admin_client):
    job = JobEventFactory(kind="succeeded", job=JobFactory(status="successful")).job
    confirm = admin_client.post(LIST, {"action": "delete_selected", "index": 0, "_selected_action": [job.pk]})
    assert confirm.status_code == 200 and "Delete the selected job" in confirm.content.decode()
    assert Job.objects.filter(pk=job.pk).exists()
    admin_client.post(LIST, {"action": "delete_selected", "post": "yes", "_selected_action": [job.pk]})
    assert not Job.objects.filter(pk=job.pk).exists()
    assert LogEntry.objects.filter(object_id=str(job.pk), action_flag=DELETION).exists()


def test_delete_keeps_running_jobs(admin_client):
    running = CurrentJobFactory().job
    gone = JobFactory(status="failed")
    response = admin_client.post(
        LIST,
        {"action": "delete_selected", "post": "yes", "_selected_action": [running.pk, gone.pk]},
        follow=True,
    )
    assert Job.objects.filter(pk=running.pk).exists() and not Job.objects.filter(pk=gone.pk).exists()
    assert "1 running job was kept: cancel it first." in str(list(response.context["messages"])[0])


def test_delete_everything_matching_a_filter_shows_an_estimate_first(admin_client):
    JobFactory.create_batch(3, status="failed")
    confirm = admin_client.post(
        LIST + "?status__exact=failed",
        {"action": "delete_selected", "index": 0, "select_across": 1, "_selected_action": ["1"]},
    )
    assert "Delete every job matching the filter: 3 jobs" in confirm.content.decode()


def test_actions_from_a_jobs_page_return_to_it(admin_client):
    job = JobFactory(status="failed", attempts=1)
    url = reverse("admin:supaqueue_job_act", args=[job.pk])
    response = admin_client.post(url, {"action": "retry_now"})
    assert response.status_code == 302 and response["Location"] == change_url(job)
    job.refresh_from_db()
    assert job.status == "pending"


def test_delete_from_a_jobs_page_confirms_then_returns_to_the_list(admin_client):
    job = JobFactory(status="successful")
    url = reverse("admin:supaqueue_job_act", args=[job.pk])
    assert "Delete the selected job" in admin_client.post(url, {"action": "delete_selected"}).content.decode()
    response = admin_client.post(url, {"action": "delete_selected", "post": "yes"})
    assert response["Location"] == LIST and not Job.objects.filter(pk=job.pk).exists()


def test_jobs_cannot_be_edited_or_added_even_by_a_superuser(admin_client):
    job = JobFactory()
    assert admin_client.get(reverse("admin:supaqueue_job_add")).status_code == 403
    response = admin_client.post(change_url(job), {"status": "successful"})
    assert response.status_code == 403
    job.refresh_from_db()
    assert job.status == "pending"


def test_a_running_job_cannot_be_deleted_from_its_delete_page(admin_client):
    running = CurrentJobFactory().job
    assert admin_client.post(reverse("admin:supaqueue_job_delete", args=[running.pk])).status_code == 403
    assert Job.objects.filter(pk=running.pk).exists()

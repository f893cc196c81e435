"""Staff see and do only what their permissions allow, on every screen and action."""

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from django_supaqueue.models import Job, JobEvent, Queue
from tests.factories import JobFactory, QueueFactory

pytestmark = pytest.mark.django_db

JOBS = reverse("admin:supaqueue_job_changelist")
QUEUES = reverse("admin:supaqueue_queue_changelist")


def post_action(client, url, action, objs):
    return client.post(url, {"action": action, "index": 0, "_selected_action": [o.pk for o in objs]})


def test_staff_without_permissions_sees_nothing(staff_client):
    client = staff_client()
    job = JobFactory()
    for url in (
        JOBS,
        reverse("admin:supaqueue_job_change", args=[job.pk]),
        QUEUES,
        reverse("admin:supaqueue_queue_change", args=[job.queue_id]),
        reverse("admin:supaqueue_worker_changelist"),
        reverse("admin:supaqueue_dashboard_changelist"),
        reverse("admin:supaqueue_dashboard_data"),
    ):
        assert client.get(url).status_code == 403, url
    assert (
        reverse("admin:supaqueue_dashboard_changelist")
        not in client.get(reverse("admin:index")).content.decode()
    )


def test_viewing_jobs_allows_no_action(staff_client):
    client = staff_client("view_job")
    job = JobFactory(status="failed", attempts=1)
    response = client.get(JOBS)
    assert response.status_code == 200 and response.context["action_form"] is None
    # With no action offered, Django's changelist ignores an action's POST and shows the list.
    assert post_action(client, JOBS, "retry_now", [job]).status_code == 200
    job.refresh_from_db()
    assert job.status == "failed" and not JobEvent.objects.exists()
    act = reverse("admin:supaqueue_job_act", args=[job.pk])
    assert client.post(act, {"action": "retry_now"}).status_code == 403
    assert client.get(reverse("admin:supaqueue_job_change", args=[job.pk])).context["job_actions"] == []


def test_changing_jobs_allows_life_cycle_actions_but_not_delete(staff_client):
    client = staff_client("view_job", "change_job")
    job = JobFactory(status="failed", attempts=1)
    choices = [name for name, _label in client.get(JOBS).context["action_form"].fields["action"].choices]
    assert choices[1:] == ["retry_now", "run_now", "reschedule", "cancel", "hold", "release_hold"]
    post_action(client, JOBS, "retry_now", [job])
    job.refresh_from_db()
    assert job.status == "pending"
    client.post(JOBS, {"action": "delete_selected", "post": "yes", "_selected_action": [job.pk]})
    assert Job.objects.filter(pk=job.pk).exists()
    act = reverse("admin:supaqueue_job_act", args=[job.pk])
    assert client.post(act, {"action": "delete_selected", "post": "yes"}).status_code == 403


def test_an_action_posted_without_its_permission_is_refused_as_djangos_admin_refuses_it(staff_client):
    """Not a 403: the list does not offer it, so the POST names no action the user has."""
    client = staff_client("view_job", "change_job")
    job = JobFactory(status="successful")
    response = post_action(client, JOBS, "delete_selected", [job])
    assert response.status_code == 302 and response["Location"] == JOBS
    assert [str(m) for m in get_messages(response.wsgi_request)] == ["No action selected."]
    assert Job.objects.filter(pk=job.pk).exists()


def test_deleting_jobs_needs_the_delete_permission(staff_client):
    client = staff_client("view_job", "delete_job")
    job = JobFactory(status="successful")
    client.post(JOBS, {"action": "delete_selected", "post": "yes", "_selected_action": [job.pk]})
    assert not Job.objects.filter(pk=job.pk).exists()


def test_viewing_queues_allows_no_pause_and_no_edit(staff_client):
    client = staff_client("view_queue")
    queue = QueueFactory(name="reports")
    assert client.get(QUEUES).status_code == 200
    post_action(client, QUEUES, "pause", [queue])
    response = client.post(
        reverse("admin:supaqueue_queue_change", args=[queue.pk]),
        {"paused": "on", "execution_mode": "threads"},
    )
    assert response.status_code == 403
    assert not Queue.objects.get(pk=queue.pk).paused


def test_changing_queues_allows_pause(staff_client):
    client = staff_client("view_queue", "change_queue")
    queue = QueueFactory(name="reports")
    post_action(client, QUEUES, "pause", [queue])
    assert Queue.objects.get(pk=queue.pk).paused


def test_the_dashboard_has_its_own_permission(staff_client):
    client = staff_client("view_job", "view_queue")
    assert client.get(reverse("admin:supaqueue_dashboard_changelist")).status_code == 403
    client.logout()
    from django.contrib.auth.models import Permission, User

    user = User.objects.get(username="staff")
    user.user_permissions.add(Permission.objects.get(codename="view_dashboard"))
    client.force_login(user)
    assert client.get(reverse("admin:supaqueue_dashboard_changelist")).status_code == 200
    assert client.get(reverse("admin:supaqueue_dashboard_data")).status_code == 200
    assert (
        reverse("admin:supaqueue_dashboard_changelist") in client.get(reverse("admin:index")).content.decode()
    )

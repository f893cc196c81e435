"""The admin shows the queue's tables, and lets nobody edit a job's state behind the queue's back."""

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from tests.factories import CurrentJobFactory, JobEventFactory, JobFactory, QueueFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def test_every_screen_renders(admin_client):
    event = JobEventFactory(kind="retried", error_class="ValueError", traceback="Traceback ...")
    lease = CurrentJobFactory()
    for name, obj in (
        ("job", event.job),
        ("queue", event.job.queue),
        ("worker", lease.worker),
        ("currentjob", lease),
    ):
        assert admin_client.get(reverse(f"admin:supaqueue_{name}_changelist")).status_code == 200
        assert admin_client.get(reverse(f"admin:supaqueue_{name}_change", args=[obj.pk])).status_code == 200
    page = admin_client.get(reverse("admin:supaqueue_job_change", args=[event.job.pk])).content.decode()
    assert "ValueError" in page and "Traceback ..." in page


def test_jobs_cannot_be_edited_or_added_even_by_a_superuser(admin_client):
    job = JobFactory()
    assert admin_client.get(reverse("admin:supaqueue_job_add")).status_code == 403
    response = admin_client.post(
        reverse("admin:supaqueue_job_change", args=[job.pk]), {"status": "successful"}
    )
    assert response.status_code == 403
    job.refresh_from_db()
    assert job.status == "pending"


def test_staff_without_permissions_sees_nothing(client):
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    queue = QueueFactory()
    assert client.get(reverse("admin:supaqueue_queue_change", args=[queue.pk])).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_queue"))
    assert client.get(reverse("admin:supaqueue_queue_change", args=[queue.pk])).status_code == 200
    response = client.post(
        reverse("admin:supaqueue_queue_change", args=[queue.pk]),
        {"name": queue.name, "paused": "on", "execution_mode": "threads"},
    )
    assert response.status_code == 403

"""Admin: typed owner and tenant filters on the job list, HTTP statuses in a job's life cycle, and rate
limits on the queue list; each bounded by an index, whatever the size of the job table."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_supaqueue.models import QueueCall
from tests.factories import JobEventFactory, JobFactory, QueueFactory

pytestmark = pytest.mark.django_db

JOBS = reverse("admin:supaqueue_job_changelist")
QUEUES = reverse("admin:supaqueue_queue_changelist")


def listed_ids(response):
    return [job.pk for job in response.context["cl"].result_list]


def job_queries(queries):
    return [q["sql"] for q in queries if 'FROM "supaqueue_job"' in q["sql"]]


def plan(queryset) -> str:
    """The plan of ``queryset`` with sequential scans off: which index, if any, can answer it."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
    return queryset.explain()


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice")


# -- owner and tenant filters ---------------------------------------------------------------------


def test_the_owner_filter_lists_the_jobs_of_the_user_typed(admin_client, alice, django_user_model):
    mine = JobFactory.create_batch(2, owner=alice)
    JobFactory(owner=django_user_model.objects.create_user("bob"))
    JobFactory()
    assert listed_ids(admin_client.get(JOBS, {"owner": "alice"})) == [job.pk for job in mine][::-1]
    assert listed_ids(admin_client.get(JOBS, {"owner": "  alice "})) == [job.pk for job in mine][::-1]


def test_the_owner_filter_finds_nothing_for_an_unknown_username(admin_client, alice):
    JobFactory(owner=alice)
    response = admin_client.get(JOBS, {"owner": "nobody"})
    assert response.status_code == 200 and listed_ids(response) == []


def test_the_tenant_filter_lists_the_jobs_of_the_tenant_typed(admin_client):
    acme = JobFactory(tenant_id="acme")
    JobFactory(tenant_id="acme-2")
    JobFactory()
    assert listed_ids(admin_client.get(JOBS, {"tenant": "acme"})) == [acme.pk]


def test_owner_and_tenant_filters_combine_with_the_others(admin_client, alice):
    wanted = JobFactory(owner=alice, tenant_id="acme", status="failed")
    JobFactory(owner=alice, tenant_id="acme")
    JobFactory(owner=alice, tenant_id="globex", status="failed")
    params = {"owner": "alice", "tenant": "acme", "status__exact": "failed"}
    assert listed_ids(admin_client.get(JOBS, params)) == [wanted.pk]


def test_the_filters_are_typed_boxes_that_keep_the_other_filters(admin_client, alice):
    JobFactory(owner=alice)
    page = admin_client.get(JOBS, {"owner": "alice", "status__exact": "pending"}).content.decode()
    assert 'type="search" id="sq-filter-owner" name="owner" value="alice"' in page
    assert 'type="search" id="sq-filter-tenant" name="tenant" value=""' in page
    assert '<input type="hidden" name="status__exact" value="pending">' in page
    assert '<input type="hidden" name="owner" value="alice">' in page  # kept by the tenant box
    assert "?status__exact=pending" in page  # "Any owner" clears only this filter


def test_the_filters_list_no_values_and_count_nothing(admin_client, alice):
    JobFactory.create_batch(3, owner=alice, tenant_id="acme")
    with CaptureQueriesContext(connection) as queries:
        assert admin_client.get(JOBS, {"owner": "alice", "tenant": "acme"}).status_code == 200
    sql = job_queries(queries)
    assert sql and not [q for q in sql if "DISTINCT" in q.upper() or "COUNT(" in q.upper()]
    listing = [q for q in sql if "LIMIT 101" in q]
    assert listing and f'"owner_id" = {alice.pk}' in listing[0] and "\"tenant_id\" = 'acme'" in listing[0]


@pytest.mark.parametrize(
    "params, index",
    [({"owner": "alice"}, "supaqueue_job_owner"), ({"tenant": "acme"}, "supaqueue_job_tenant")],
)
def test_each_filter_can_be_answered_by_its_partial_index(admin_client, alice, params, index):
    JobFactory(owner=alice, tenant_id="acme")
    queryset = admin_client.get(JOBS, params).context["cl"].queryset
    assert index in plan(queryset)


def test_staff_need_view_job_to_filter_jobs(staff_client, alice):
    JobFactory(owner=alice, tenant_id="acme")
    assert staff_client().get(JOBS, {"owner": "alice"}).status_code == 403


def test_staff_with_view_job_can_filter_by_owner_and_tenant(staff_client, alice):
    job = JobFactory(owner=alice, tenant_id="acme")
    JobFactory()
    client = staff_client("view_job")
    assert listed_ids(client.get(JOBS, {"owner": "alice", "tenant": "acme"})) == [job.pk]


def test_a_jobs_page_shows_its_owner_and_tenant(admin_client, alice):
    job = JobFactory(owner=alice, tenant_id="acme")
    page = admin_client.get(reverse("admin:supaqueue_job_change", args=[job.pk])).content.decode()
    assert "alice" in page and "acme" in page


# -- HTTP statuses in a job's life cycle ------------------------------------------------------------


def http_job(**kwargs):
    return JobFactory(
        task_name="", queue=QueueFactory(name="hooks", http_url="https://hooks.example.com"), **kwargs
    )


def test_an_http_jobs_life_cycle_shows_the_status_of_each_call(admin_client):
    job = http_job(status="successful", attempts=2)
    JobEventFactory(job=job, kind="started", attempt=1)
    JobEventFactory(
        job=job, kind="retried", attempt=1, http_status=503, error_message="POST returned HTTP 503"
    )
    JobEventFactory(job=job, kind="started", attempt=2)
    JobEventFactory(job=job, kind="succeeded", attempt=2, http_status=200)
    page = admin_client.get(reverse("admin:supaqueue_job_change", args=[job.pk])).content.decode()
    assert '<th scope="col">HTTP status</th>' in page
    assert '<span class="sq-badge sq-http-error" title="Service Unavailable">HTTP 503</span>' in page
    assert '<span class="sq-badge sq-http-ok" title="OK">HTTP 200</span>' in page
    assert page.index("HTTP 503") < page.index("HTTP 200")  # oldest first


def test_a_client_error_and_a_redirect_are_named_too(admin_client):
    job = http_job(status="failed", attempts=1)
    JobEventFactory(job=job, kind="failed", attempt=1, http_status=404)
    other = http_job(status="failed", attempts=1)
    JobEventFactory(job=other, kind="failed", attempt=1, http_status=302)
    assert (
        'sq-http-error" title="Not Found">HTTP 404'
        in admin_client.get(reverse("admin:supaqueue_job_change", args=[job.pk])).content.decode()
    )
    assert (
        'sq-http-redirect" title="Found">HTTP 302'
        in admin_client.get(reverse("admin:supaqueue_job_change", args=[other.pk])).content.decode()
    )


def test_the_job_list_names_an_http_jobs_call_in_place_of_a_task(admin_client):
    http_job(http_path="orders/7")
    page = admin_client.get(JOBS).content.decode()
    assert '<span title="https://hooks.example.com/orders/7">POST /orders/7</span>' in page


def test_a_python_jobs_life_cycle_has_no_http_column(admin_client):
    job = JobFactory(status="successful", attempts=1)
    JobEventFactory(job=job, kind="succeeded", attempt=1)
    page = admin_client.get(reverse("admin:supaqueue_job_change", args=[job.pk])).content.decode()
    assert "HTTP status" not in page and "sq-http-" not in page


def test_statuses_recorded_before_a_queue_stopped_calling_still_show(admin_client):
    job = JobFactory(status="successful", attempts=1)
    JobEventFactory(job=job, kind="succeeded", attempt=1, http_status=201)
    page = admin_client.get(reverse("admin:supaqueue_job_change", args=[job.pk])).content.decode()
    assert "HTTP status" in page and ">HTTP 201<" in page


def test_staff_need_view_job_to_see_an_http_jobs_life_cycle(staff_client):
    job = http_job(status="successful", attempts=1)
    JobEventFactory(job=job, kind="succeeded", attempt=1, http_status=200)
    url = reverse("admin:supaqueue_job_change", args=[job.pk])
    assert staff_client().get(url).status_code == 403


def test_staff_with_view_job_see_the_http_statuses(staff_client):
    job = http_job(status="successful", attempts=1)
    JobEventFactory(job=job, kind="succeeded", attempt=1, http_status=200)
    page = staff_client("view_job").get(reverse("admin:supaqueue_job_change", args=[job.pk])).content.decode()
    assert ">HTTP 200<" in page


# -- rate limits and concurrency on the queue list ----------------------------------------------------


def queue_row(response, name):
    return next(q for q in response.context["cl"].result_list if q.name == name)


def test_the_queue_list_shows_the_rate_limit_and_the_room_left_now(admin_client):
    hooks = QueueFactory(name="hooks", rate_limit=3, rate_period=2.0, concurrency_limit=4)
    QueueCall.objects.create(queue=hooks, at=timezone.now())
    QueueCall.objects.create(queue=hooks, at=timezone.now() - timedelta(seconds=30))  # an older window
    response = admin_client.get(QUEUES)
    assert queue_row(response, "hooks").rate_room == 2
    page = response.content.decode()
    assert '3 per 2 s <span class="sq-badge sq-active">2 free now</span>' in page
    assert re.search(r'name="form-\d+-concurrency_limit" value="4"', page)  # the cap, editable in place


def test_a_full_window_says_its_jobs_wait(admin_client):
    hooks = QueueFactory(name="hooks", rate_limit=2, rate_period=60.0)
    QueueCall.objects.bulk_create([QueueCall(queue=hooks, at=timezone.now()) for _ in range(2)])
    page = admin_client.get(QUEUES).content.decode()
    assert '2 per 60 s <span class="sq-badge sq-paused">full: jobs wait</span>' in page


def test_queues_without_a_rate_limit_cost_no_rate_query(admin_client):
    QueueFactory(name="plain")
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(QUEUES)
    assert queue_row(response, "plain").rate_room is None
    assert not [q["sql"] for q in queries if "supaqueue_queuecall" in q["sql"]]


def test_one_statement_gives_the_room_of_every_rate_limited_queue(admin_client):
    for name in ("a", "b", "c"):
        QueueFactory(name=name, rate_limit=5)
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(QUEUES)
    assert [queue_row(response, name).rate_room for name in ("a", "b", "c")] == [5, 5, 5]
    assert len([q for q in queries if "supaqueue_queuecall" in q["sql"]]) == 1


def test_staff_need_view_queue_to_see_rate_limits(staff_client):
    QueueFactory(name="hooks", rate_limit=3)
    assert staff_client("view_job").get(QUEUES).status_code == 403


def test_staff_with_view_queue_see_rate_limits(staff_client):
    QueueFactory(name="hooks", rate_limit=3)
    assert "3 per 1 s" in staff_client("view_queue").get(QUEUES).content.decode()

"""Mount with ``path("queue/", include("django_supaqueue.urls"))``."""

from django.urls import path

from . import views

app_name = "supaqueue"

urlpatterns = [
    path("run", views.run, name="run"),
    path("jobs", views.create_job, name="jobs"),
    path("jobs/<int:job_id>", views.job_detail, name="job"),
]

"""The (queue, status) index no longer holds pending and running jobs: writing and claiming
a job then update one index fewer. The dashboard counts pending jobs through the claim
index and the new index of held jobs, and running ones through the index of running jobs."""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("supaqueue", "0009_claim_statement_time"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveIndex(model_name="job", name="supaqueue_job_queue_status"),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("status__in", ["pending", "in_progress"]), _negated=True),
                fields=["queue", "status"],
                name="supaqueue_job_queue_status",
            ),
        ),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("enabled", False), ("status", "pending")),
                fields=["queue"],
                name="supaqueue_job_held",
            ),
        ),
    ]

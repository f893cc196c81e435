from django.db import migrations

from django_supaqueue.operations import InstallJobTrigger


class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial"), ("supaqueue", "0001_initial")]
    operations = [
        InstallJobTrigger(
            model_name="order",
            task="tests.shop.tasks.status_changed",
            payload=["number", "status"],  # or "id", or "row": the shapes signals give
            on=["insert", "update"],  # any of "insert", "update", "delete"
            changed=["status"],  # updates only when status changed
        ),
    ]

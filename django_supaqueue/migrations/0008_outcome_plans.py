"""The SQL worker's supaqueue_fail_job copies fail's upd step, which now finds the job by its id
in every plan (queue/outcomes.sql says why), so sql/sql_worker.sql is installed again."""

import importlib

from django.db import migrations

run_sql_file = importlib.import_module("django_supaqueue.migrations.0001_initial").run_sql_file


class Migration(migrations.Migration):

    dependencies = [
        ("supaqueue", "0007_async_queues"),
    ]

    operations = [
        # Backwards there is nothing to undo: the earlier body behaves the same.
        migrations.RunSQL(run_sql_file("sql_worker").sql, migrations.RunSQL.noop),
    ]

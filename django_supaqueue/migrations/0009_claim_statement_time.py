"""The SQL worker's supaqueue_get_job copies the claim statements, which now stamp starts and
leases with the statement's time, not the transaction's (queue/claims.sql says why), so
sql/sql_worker.sql is installed again."""

import importlib

from django.db import migrations

run_sql_file = importlib.import_module("django_supaqueue.migrations.0001_initial").run_sql_file


class Migration(migrations.Migration):

    dependencies = [
        ("supaqueue", "0008_outcome_plans"),
    ]

    operations = [
        # Backwards there is nothing to undo: the earlier body behaves the same but for the timestamp.
        migrations.RunSQL(run_sql_file("sql_worker").sql, migrations.RunSQL.noop),
    ]

"""The SQL interface: enqueue, reschedule and work jobs from SQL, for callers that are not Django.

The functions live in django_supaqueue/sql/, one file per concern, read by
0001_initial's run_sql_file (its placeholders, such as the NOTIFY channel, are
written in the same way). docs/howto/sql-interface.md is their reference.
"""

import importlib

from django.db import migrations

run_sql_file = importlib.import_module("django_supaqueue.migrations.0001_initial").run_sql_file


class Migration(migrations.Migration):

    dependencies = [
        ("supaqueue", "0003_job_http_method"),
    ]

    operations = [
        run_sql_file("add_job"),
        run_sql_file("reschedule_jobs"),
        run_sql_file("sql_worker"),
    ]

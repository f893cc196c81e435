"""The claim's queue filter by kind (HTTP queues or the others): a worker's async lane claims the calls
to HTTP queues, its thread lanes the rest.

The SQL worker's supaqueue_get_job copies the claim (sql/sql_worker.sql), so it is
installed again with the claim that has the filter.
"""

import importlib

from django.db import migrations

run_sql_file = importlib.import_module("django_supaqueue.migrations.0001_initial").run_sql_file


class Migration(migrations.Migration):

    dependencies = [
        ('supaqueue', '0005_limit_scope'),
    ]

    operations = [
        run_sql_file("sql_worker"),
    ]

"""Async queues (execution_mode 'async': async def tasks on a worker's event loop) and the
``blocked`` event of an attempt that stopped that loop.

The claim's lane filter now sends async queues' jobs to the async lane too; the SQL
worker's supaqueue_get_job copies it (sql/sql_worker.sql), so it is installed again.
"""

import importlib

from django.db import migrations, models

run_sql_file = importlib.import_module("django_supaqueue.migrations.0001_initial").run_sql_file


class Migration(migrations.Migration):

    dependencies = [
        ('supaqueue', '0006_claim_http_lanes'),
    ]

    operations = [
        migrations.AlterField(
            model_name='jobevent',
            name='kind',
            field=models.CharField(choices=[('enqueued', 'Enqueued'), ('started', 'Started'), ('succeeded', 'Succeeded'), ('retried', 'Failed, will retry'), ('failed', 'Failed for good'), ('cancelled', 'Cancelled'), ('released', 'Released by a stopping worker'), ('manual_retry', 'Retried by hand'), ('run_now', 'Run now by hand'), ('held', 'Held'), ('hold_released', 'Released from hold'), ('stopped', 'Attempt stopped after a cancel'), ('blocked', "Blocked the worker's event loop")], max_length=16),
        ),
        migrations.AlterField(
            model_name='queue',
            name='execution_mode',
            field=models.CharField(choices=[('threads', 'Threads (fast; a timed-out attempt is interrupted at its next instruction)'), ('processes', 'Processes (isolated; a timed-out attempt is killed)'), ('async', "Async (async def tasks as coroutines on the worker's event loop)")], db_default='threads', default='threads', max_length=16),
        ),
        run_sql_file("sql_worker"),
    ]

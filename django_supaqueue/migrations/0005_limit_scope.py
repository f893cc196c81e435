"""Limits per tenant: Queue.limit_scope, the tenant of each logged start and of a schedule's jobs, and
the tenants' claim index.

The SQL worker's supaqueue_get_job copies the claim (sql/sql_worker.sql), so it is
installed again with the claim that knows tenants.
"""

import importlib

from django.conf import settings
from django.db import migrations, models

run_sql_file = importlib.import_module("django_supaqueue.migrations.0001_initial").run_sql_file


class Migration(migrations.Migration):

    dependencies = [
        ('supaqueue', '0004_sql_interface'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='queue',
            name='limit_scope',
            field=models.CharField(choices=[('queue', 'The queue: one cap and one rate limit for all its jobs'), ('tenant', 'Each tenant: every tenant_id gets the cap and the rate limit to itself')], db_default='queue', default='queue', help_text="What the concurrency cap and the rate limit count: the whole queue, or each tenant's jobs apart, so that one busy tenant cannot hold back the others. Jobs without a tenant_id count as one tenant.", max_length=8),
        ),
        migrations.AddField(
            model_name='queuecall',
            name='tenant_id',
            field=models.CharField(blank=True, db_default='', default='', max_length=255),
        ),
        migrations.AddField(
            model_name='schedule',
            name='tenant_id',
            field=models.CharField(blank=True, help_text="Tenant of the jobs it fires (@pgpm/jobs' database_id); blank: none.", max_length=255, null=True),
        ),
        migrations.AddIndex(
            model_name='job',
            index=models.Index(models.F('queue'), models.F('tenant_id'), models.OrderBy(models.F('priority'), descending=True), models.F('run_at'), models.F('id'), condition=models.Q(('enabled', True), ('status', 'pending'), ('tenant_id__isnull', False)), name='supaqueue_job_tenant_claim'),
        ),
        migrations.AddConstraint(
            model_name='queue',
            constraint=models.CheckConstraint(condition=models.Q(('limit_scope', 'queue'), ('serial', False), _connector='OR'), name='supaqueue_queue_serial_scope', violation_error_message="A serial queue's limits apply to the queue, not per tenant."),
        ),
        run_sql_file("sql_worker"),
    ]

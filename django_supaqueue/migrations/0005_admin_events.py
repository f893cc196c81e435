"""Admin actions' event kinds, the dashboard's entry, and what the dashboard reads at scale.

- JobEvent kinds for the operator actions (manual_retry, run_now, held, hold_released).
- Dashboard: a proxy model, so the admin index links the dashboard and
  ``supaqueue.view_dashboard`` can be granted on its own.
- A BRIN index on supaqueue_jobevent(at): events are append-only, so their time
  follows their place in the table and a few kilobytes of index find the last
  hour (throughput, failure rate, recent failures). It costs an insert next to
  nothing; autosummarize keeps new block ranges summarised by autovacuum.
  Created here in SQL because Django's BrinIndex needs django.contrib.postgres
  in INSTALLED_APPS, which this app does not ask its users for.
- Multivariate statistics on supaqueue_job(queue_id, status): the planner's
  estimates of jobs per queue and status (shown where exact counts would be
  slow) stay close when queues differ in how their jobs end. Only ANALYZE pays.
"""

from django.db import migrations, models

CREATE = """
CREATE INDEX IF NOT EXISTS supaqueue_event_at_brin ON supaqueue_jobevent USING brin (at)
  WITH (autosummarize = on);
CREATE STATISTICS IF NOT EXISTS supaqueue_job_queue_status_stats (mcv, ndistinct)
  ON queue_id, status FROM supaqueue_job;
"""

DROP = """
DROP STATISTICS IF EXISTS supaqueue_job_queue_status_stats;
DROP INDEX IF EXISTS supaqueue_event_at_brin;
"""


class Migration(migrations.Migration):

    dependencies = [
        ('supaqueue', '0004_retention_and_autovacuum'),
    ]

    operations = [
        migrations.CreateModel(
            name='Dashboard',
            fields=[
            ],
            options={
                'verbose_name': 'dashboard',
                'verbose_name_plural': 'dashboard',
                'proxy': True,
                'default_permissions': ('view',),
                'indexes': [],
                'constraints': [],
            },
            bases=('supaqueue.job',),
        ),
        migrations.AlterField(
            model_name='jobevent',
            name='kind',
            field=models.CharField(choices=[('enqueued', 'Enqueued'), ('started', 'Started'), ('succeeded', 'Succeeded'), ('retried', 'Failed, will retry'), ('failed', 'Failed for good'), ('cancelled', 'Cancelled'), ('released', 'Released by a stopping worker'), ('manual_retry', 'Retried by hand'), ('run_now', 'Run now by hand'), ('held', 'Held'), ('hold_released', 'Released from hold')], max_length=16),
        ),
        migrations.RunSQL(CREATE, DROP),
    ]

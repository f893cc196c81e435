"""The supaqueue schema: the models' tables, then what Django's model options cannot say, in SQL.

The package had no release when its development migrations were squashed into
this one; a database migrated with them must be recreated. The fields are listed
in the order of the columns those migrations left, so both schemas dump alike.

The functions, triggers, storage parameters, BRIN index and statistics live in
django_supaqueue/sql/, one file per concern, each saying why it is SQL.
"""

from pathlib import Path

import django.core.validators
import django.db.models.deletion
import django.db.models.functions.datetime
from django.conf import settings
from django.db import migrations, models

import django_supaqueue.models
from django_supaqueue.constants import CHANNEL

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
#: How the SQL files write the names the code must agree on, and what replaces them.
PLACEHOLDERS = {":'channel'": "'" + CHANNEL.replace("'", "''") + "'"}
#: The line that ends a file's forward SQL; what follows it undoes it.
REVERSE = "\n-- reverse\n"


def run_sql_file(name):
    """RunSQL of ``sql/<name>.sql``: forwards above its ``-- reverse`` line, backwards below it.

    The files run as they are when a migration runs: a later change to one reaches
    existing databases only through a new migration that runs it again (the
    functions are CREATE OR REPLACE).
    """
    text = (SQL_DIR / f"{name}.sql").read_text(encoding="utf-8")
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    forward, marker, reverse = text.partition(REVERSE)
    if not marker:
        raise ValueError(f"sql/{name}.sql has no '-- reverse' line.")
    return migrations.RunSQL(forward, reverse)


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        # Before the job table: its one CHECK constraint calls this function.
        run_sql_file("job_is_valid"),
        migrations.CreateModel(
            name='Worker',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=255, unique=True)),
                ('host', models.CharField(max_length=255)),
                ('pid', models.PositiveIntegerField()),
                ('queues', models.JSONField(blank=True, default=list, help_text='Queues served; empty means every queue.')),
                ('concurrency', models.PositiveIntegerField(default=1)),
                ('started_at', models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
                ('last_heartbeat_at', models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
            ],
            options={
                'ordering': ['name'],
            },
        ),
        migrations.CreateModel(
            name='Queue',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=100, unique=True, validators=[django.core.validators.RegexValidator('^[A-Za-z0-9][A-Za-z0-9_.:-]*$', "Queue names use letters, digits, '_', '.', ':' and '-', starting with a letter or digit.")])),
                ('max_attempts', models.PositiveIntegerField(blank=True, help_text="Attempts before a job fails for good (blank: SUPAQUEUE['MAX_ATTEMPTS']).", null=True, validators=[django.core.validators.MinValueValidator(1)])),
                ('priority', models.SmallIntegerField(blank=True, help_text='Default priority of new jobs, -100..100, higher first.', null=True, validators=[django.core.validators.MinValueValidator(-100), django.core.validators.MaxValueValidator(100)])),
                ('retry_backoff', models.FloatField(blank=True, help_text='Seconds before the first retry; doubles each attempt.', null=True, validators=[django.core.validators.MinValueValidator(0)])),
                ('retry_backoff_max', models.FloatField(blank=True, help_text='Longest wait between two attempts, in seconds.', null=True, validators=[django.core.validators.MinValueValidator(0)])),
                ('timeout', models.FloatField(blank=True, help_text='Seconds an attempt may run before it is stopped and retried.', null=True, validators=[django.core.validators.MinValueValidator(0.001)])),
                ('paused', models.BooleanField(db_default=False, default=False, help_text='Paused queues keep their jobs but run none.')),
                ('concurrency_limit', models.PositiveIntegerField(blank=True, help_text='Most jobs of this queue running at once across all workers (blank: unlimited).', null=True, validators=[django.core.validators.MinValueValidator(1)])),
                ('created_at', models.DateTimeField(db_default=django.db.models.functions.datetime.Now(), editable=False)),
                ('updated_at', models.DateTimeField(auto_now=True, db_default=django.db.models.functions.datetime.Now())),
                ('execution_mode', models.CharField(choices=[('threads', 'Threads (fast; a timed-out attempt is interrupted at its next instruction)'), ('processes', 'Processes (isolated; a timed-out attempt is killed)')], db_default='threads', default='threads', max_length=16)),
                ('http_headers', models.JSONField(blank=True, db_default=models.Value({}, models.JSONField()), default=dict, help_text='Headers sent with every call (never secrets: use the secret alias).', verbose_name='HTTP headers')),
                ('http_method', models.CharField(choices=[('GET', 'Get'), ('POST', 'Post'), ('PUT', 'Put'), ('PATCH', 'Patch'), ('DELETE', 'Delete')], db_default='POST', default='POST', max_length=8, verbose_name='HTTP method')),
                ('http_retry_client_errors', models.BooleanField(db_default=False, default=False, help_text='Retry 4xx responses too (408 and 429 are always retried).', verbose_name='retry HTTP 4xx')),
                ('http_secret', models.CharField(blank=True, db_default='', default='', help_text="Name of an entry of SUPAQUEUE['HTTP_SECRETS'] (the alias, never the value).", max_length=100, verbose_name='HTTP secret alias')),
                ('http_secret_header', models.CharField(db_default='Authorization', default='Authorization', help_text="Header carrying the secret; Authorization sends 'Bearer <secret>'.", max_length=100, verbose_name='HTTP secret header')),
                ('http_url', models.CharField(blank=True, db_default='', default='', help_text='Base URL an HTTP queue calls (blank: the queue runs Python tasks).', max_length=2000, verbose_name='HTTP URL')),
                ('rate_limit', models.PositiveIntegerField(blank=True, help_text='Most attempts started per rate period across all workers (blank: unlimited).', null=True, validators=[django.core.validators.MinValueValidator(1)])),
                ('rate_period', models.FloatField(db_default=1.0, default=1.0, help_text='Length in seconds of the sliding window the rate limit counts in.', validators=[django.core.validators.MinValueValidator(0.001)])),
                ('head_of_line', models.BooleanField(db_default=True, default=True, help_text='In a serial queue or group, a job waiting for its retry keeps its place: nothing behind it starts until it has run. Off: later jobs pass it.', verbose_name='head of line')),
                ('serial', models.BooleanField(db_default=False, default=False, help_text='Run at most one job of this queue at a time across all workers, in claim order.')),
            ],
            options={
                'ordering': ['name'],
                'constraints': [models.CheckConstraint(condition=models.Q(('priority__isnull', True), models.Q(('priority__gte', -100), ('priority__lte', 100)), _connector='OR'), name='supaqueue_queue_priority_range')],
            },
        ),
        migrations.CreateModel(
            name='Job',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('task_name', models.CharField(blank=True, help_text='Dotted path of the task.', max_length=255)),
                ('payload', models.JSONField(blank=True, db_default=models.Value({}, models.JSONField()), default=dict)),
                ('args', models.JSONField(blank=True, db_default=models.Value([], models.JSONField()), default=list)),
                ('status', models.CharField(choices=[('waiting', 'Waiting for dependencies'), ('pending', 'Pending'), ('in_progress', 'In progress'), ('successful', 'Successful'), ('failed', 'Failed'), ('cancelled', 'Cancelled')], db_default='pending', default='pending', max_length=16)),
                ('priority', models.SmallIntegerField(db_default=0, default=0, validators=[django.core.validators.MinValueValidator(-100), django.core.validators.MaxValueValidator(100)])),
                ('run_at', models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
                ('attempts', models.IntegerField(db_default=0, default=0, validators=[django.core.validators.MinValueValidator(0)])),
                ('max_attempts', models.IntegerField(db_default=5, default=5, validators=[django.core.validators.MinValueValidator(1)])),
                ('key', models.CharField(blank=True, max_length=255, null=True)),
                ('enabled', models.BooleanField(db_default=True, default=True, help_text='Held jobs are never claimed.')),
                ('result', models.JSONField(blank=True, null=True)),
                ('last_error', models.TextField(blank=True, db_default='', default='')),
                ('created_at', models.DateTimeField(db_default=django.db.models.functions.datetime.Now(), editable=False)),
                ('started_at', models.DateTimeField(blank=True, null=True)),
                ('finished_at', models.DateTimeField(blank=True, null=True)),
                ('queue', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='jobs', to='supaqueue.queue')),
                ('http_path', models.CharField(blank=True, db_default='', default='', help_text="Relative path appended to the HTTP queue's base URL.", max_length=1000, verbose_name='HTTP path')),
                ('owner', models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('tenant_id', models.CharField(blank=True, max_length=255, null=True)),
                ('trace_context', models.JSONField(blank=True, editable=False, help_text='W3C trace context of the code that enqueued the job (OpenTelemetry).', null=True)),
                ('has_dependents', models.BooleanField(db_default=False, default=False, editable=False, help_text='Set before a dependent is written, so finishing this job knows to settle them.')),
                ('on_dependency_failure', models.CharField(choices=[('cancel', 'Cancel this job'), ('run', 'Run this job anyway')], db_default='cancel', default='cancel', help_text='What happens when a dependency fails for good or is cancelled.', max_length=8)),
                ('waiting_for', models.IntegerField(db_default=0, default=0, editable=False, help_text='Dependencies that have not finished yet.', validators=[django.core.validators.MinValueValidator(0)])),
                ('serial_group', models.CharField(blank=True, help_text='At most one job of a serial group runs at a time across all queues and workers.', max_length=255, null=True)),
            ],
            options={
                'ordering': ['-id'],
                'indexes': [
                    models.Index(models.F('queue'), models.OrderBy(models.F('priority'), descending=True), models.F('run_at'), models.F('id'), condition=models.Q(('enabled', True), ('status', 'pending')), name='supaqueue_job_claim'),
                    models.Index(condition=models.Q(('status', 'in_progress')), fields=['queue'], name='supaqueue_job_running'),
                    models.Index(fields=['queue', 'status'], name='supaqueue_job_queue_status'),
                    models.Index(condition=models.Q(('finished_at__isnull', False)), fields=['finished_at'], name='supaqueue_job_finished'),
                    models.Index(condition=models.Q(('owner__isnull', False)), fields=['owner'], name='supaqueue_job_owner'),
                    models.Index(condition=models.Q(('tenant_id__isnull', False)), fields=['tenant_id'], name='supaqueue_job_tenant'),
                    models.Index(models.F('serial_group'), models.OrderBy(models.F('priority'), descending=True), models.F('run_at'), models.F('id'), condition=models.Q(('enabled', True), ('serial_group__isnull', False), ('status', 'pending')), name='supaqueue_job_group'),
                    models.Index(models.F('queue'), models.OrderBy(models.F('priority'), descending=True), models.F('run_at'), models.F('id'), condition=models.Q(('attempts__gt', 0), ('enabled', True), ('status', 'pending')), name='supaqueue_job_retrying'),
                ],
                'constraints': [
                    models.UniqueConstraint(condition=models.Q(('key__isnull', False), ('status__in', ['waiting', 'pending'])), fields=('key',), name='supaqueue_job_pending_key'),
                    models.CheckConstraint(condition=models.Func(models.F('status'), models.F('priority'), models.F('max_attempts'), models.F('attempts'), models.F('waiting_for'), function='supaqueue_job_is_valid', output_field=models.BooleanField()), name='supaqueue_job_valid', violation_error_message='A job needs a known status, a priority in -100..100, max_attempts of at least 1, and attempts and waiting_for of at least 0.'),
                ],
            },
        ),
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
        migrations.CreateModel(
            name='JobDependency',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('position', models.PositiveSmallIntegerField(default=0, help_text="Order in the job's depends_on.")),
                ('settled', models.BooleanField(db_default=False, default=False)),
                ('depends_on', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='dependent_links', to='supaqueue.job')),
                ('job', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='dependency_links', to='supaqueue.job')),
            ],
            options={
                'verbose_name': 'job dependency',
                'verbose_name_plural': 'job dependencies',
                'constraints': [
                    models.UniqueConstraint(fields=('job', 'depends_on'), name='supaqueue_dependency_unique'),
                    models.CheckConstraint(condition=models.Q(('job', models.F('depends_on')), _negated=True), name='supaqueue_dependency_not_self'),
                ],
            },
        ),
        migrations.AddField(
            model_name='job',
            name='depends_on',
            field=models.ManyToManyField(blank=True, help_text='Jobs that must succeed before this one runs.', related_name='dependents', through='supaqueue.JobDependency', to='supaqueue.job'),
        ),
        migrations.CreateModel(
            name='JobEvent',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('kind', models.CharField(choices=[('enqueued', 'Enqueued'), ('started', 'Started'), ('succeeded', 'Succeeded'), ('retried', 'Failed, will retry'), ('failed', 'Failed for good'), ('cancelled', 'Cancelled'), ('released', 'Released by a stopping worker'), ('manual_retry', 'Retried by hand'), ('run_now', 'Run now by hand'), ('held', 'Held'), ('hold_released', 'Released from hold'), ('stopped', 'Attempt stopped after a cancel')], max_length=16)),
                ('attempt', models.PositiveIntegerField(blank=True, null=True)),
                ('worker_name', models.CharField(blank=True, default='', max_length=255)),
                ('at', models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
                ('duration', models.FloatField(blank=True, help_text='Seconds the attempt ran.', null=True)),
                ('error_class', models.CharField(blank=True, default='', max_length=255)),
                ('error_message', models.TextField(blank=True, default='')),
                ('traceback', models.TextField(blank=True, default='')),
                ('retry_at', models.DateTimeField(blank=True, null=True)),
                ('job', models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.CASCADE, related_name='events', to='supaqueue.job')),
                ('http_status', models.PositiveSmallIntegerField(blank=True, help_text="Status code of an HTTP queue's call.", null=True, verbose_name='HTTP status')),
            ],
            options={
                'verbose_name': 'job event',
                'ordering': ['job', 'id'],
            },
        ),
        migrations.CreateModel(
            name='QueueCall',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('at', models.DateTimeField()),
                ('queue', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='supaqueue.queue')),
            ],
            options={
                'verbose_name': 'queue call',
                'indexes': [models.Index(fields=['queue', 'at'], name='supaqueue_call_queue_at')],
            },
        ),
        migrations.CreateModel(
            name='Schedule',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=200, unique=True)),
                ('task_name', models.CharField(blank=True, help_text='Dotted path of the task (blank: a call to the HTTP queue).', max_length=255)),
                ('queue', models.CharField(blank=True, help_text="The jobs' queue (blank: the task's); for an HTTP call, the HTTP queue.", max_length=100, validators=[django.core.validators.RegexValidator('^[A-Za-z0-9][A-Za-z0-9_.:-]*$', "Queue names use letters, digits, '_', '.', ':' and '-', starting with a letter or digit.")])),
                ('http_path', models.CharField(blank=True, max_length=1000, verbose_name='HTTP path')),
                ('payload', models.JSONField(blank=True, default=dict, help_text='Keyword arguments, or the JSON body.')),
                ('priority', models.SmallIntegerField(blank=True, null=True, validators=[django.core.validators.MinValueValidator(-100), django.core.validators.MaxValueValidator(100)])),
                ('max_attempts', models.PositiveIntegerField(blank=True, null=True, validators=[django.core.validators.MinValueValidator(1)])),
                ('cron', models.CharField(blank=True, help_text='minute hour day-of-month month day-of-week, e.g. 0 2 * * *', max_length=200)),
                ('schedule_info', models.JSONField(blank=True, help_text='Instead of cron, a @pgpm/jobs rule: {"hour": [2], "minute": [0]} or {"rule": "*/5 * * * *", "start": "...", "end": "..."}.', null=True)),
                ('timezone', models.CharField(default=django_supaqueue.models.default_timezone, help_text='IANA time zone the timing is read in.', max_length=64)),
                ('enabled', models.BooleanField(default=True)),
                ('missed', models.CharField(choices=[('skip', 'Skip: fire the latest missed tick once'), ('catch_up', 'Catch up: fire every missed tick, up to the limit')], default='skip', help_text='What ticks missed while no worker ran become.', max_length=16)),
                ('catch_up_limit', models.PositiveIntegerField(default=10, help_text='Most missed ticks a catch-up fires.', validators=[django.core.validators.MinValueValidator(1)])),
                ('origin', models.CharField(choices=[('admin', 'Admin'), ('code', "Code (@task cron= or SUPAQUEUE['SCHEDULES'])")], default='admin', editable=False, max_length=8)),
                ('last_run_at', models.DateTimeField(blank=True, editable=False, null=True)),
                ('next_run_at', models.DateTimeField(blank=True, editable=False, null=True)),
                ('last_error', models.TextField(blank=True, default='', editable=False)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('last_job', models.ForeignKey(blank=True, db_constraint=False, editable=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='supaqueue.job')),
            ],
            options={
                'ordering': ['name'],
                'indexes': [models.Index(condition=models.Q(('enabled', True)), fields=['next_run_at'], name='supaqueue_schedule_due')],
                'constraints': [
                    models.CheckConstraint(condition=models.Q(models.Q(('cron', ''), _negated=True), ('schedule_info__isnull', False), _connector='OR'), name='supaqueue_schedule_has_timing'),
                    models.CheckConstraint(condition=models.Q(models.Q(('task_name', ''), _negated=True), models.Q(('queue', ''), _negated=True), _connector='OR'), name='supaqueue_schedule_has_target'),
                ],
            },
        ),
        migrations.CreateModel(
            name='ScheduleTick',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('tick_at', models.DateTimeField()),
                ('manual', models.BooleanField(default=False)),
                ('fired_at', models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
                ('error', models.TextField(blank=True, default='')),
                ('job', models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='supaqueue.job')),
                ('schedule', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='ticks', to='supaqueue.schedule')),
            ],
            options={
                'verbose_name': 'schedule tick',
                'ordering': ['schedule', '-id'],
                'constraints': [models.UniqueConstraint(condition=models.Q(('manual', False)), fields=('schedule', 'tick_at'), name='supaqueue_tick_once')],
            },
        ),
        migrations.CreateModel(
            name='CurrentJob',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('attempt', models.PositiveIntegerField()),
                ('started_at', models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
                ('lease_expires_at', models.DateTimeField()),
                ('job', models.OneToOneField(db_constraint=False, on_delete=django.db.models.deletion.CASCADE, related_name='current', to='supaqueue.job')),
                ('worker', models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.PROTECT, related_name='current_jobs', to='supaqueue.worker')),
                ('serial_group', models.CharField(blank=True, max_length=255, null=True)),
                ('serial_queue', models.BigIntegerField(blank=True, help_text='Id of the serial queue held.', null=True)),
            ],
            options={
                'verbose_name': 'current job',
                'constraints': [
                    models.UniqueConstraint(condition=models.Q(('serial_queue__isnull', False)), fields=('serial_queue',), name='supaqueue_current_queue'),
                    models.UniqueConstraint(condition=models.Q(('serial_group__isnull', False)), fields=('serial_group',), name='supaqueue_current_group'),
                ],
            },
        ),
        run_sql_file("notify_jobs"),
        run_sql_file("settle_dependents"),
        run_sql_file("protect_on_delete"),
        run_sql_file("job_deleted"),
        run_sql_file("autovacuum"),
        run_sql_file("dashboard_reads"),
    ]

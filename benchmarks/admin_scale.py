#!/usr/bin/env python3
"""Time every admin screen with a million jobs in the table: ``python benchmarks/admin_scale.py``.

Not a test: it prints the figures of docs/explanation/performance.md. It runs
against the database in $DATABASE_URL (default ``postgres://postgres@127.0.0.1:5432/supaqueue_admin_scale``),
creating it if missing, migrating it, and filling it once with ``--jobs`` jobs
(default 1,000,000) and about two events per job, written by
``INSERT … SELECT generate_series`` in the database. ``--drop`` removes the
database at the end.

The data looks like a busy production table: four queues of very different
sizes, six tasks (one with ten jobs in all), 93 % successful, 4 % failed,
1 % cancelled, 2 % pending (some held, some in the future), a few hundred
running on a live worker, jobs spread over the last day with events in the
last hour, one job in ten with a key, one in a hundred with an owner (twenty
users, 500 jobs each) and one in a hundred with a tenant (fifty tenants, 200
jobs each), plus an owner and a tenant with ten jobs each; "reports" is
rate-limited.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/supaqueue_admin_scale"

FILL = """
INSERT INTO supaqueue_queue (name, paused, execution_mode, created_at, updated_at)
SELECT n, false, 'threads', now(), now() FROM unnest(ARRAY['default', 'emails', 'reports', 'rare']) n
ON CONFLICT (name) DO NOTHING;

UPDATE supaqueue_queue SET rate_limit = 50, rate_period = 1 WHERE name = 'reports';

INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff, is_active,
                       date_joined)
SELECT '!', false, n, '', '', '', false, true, now()
FROM unnest(ARRAY['bench-rare'] || ARRAY(SELECT 'bench-user-' || k FROM generate_series(0, 19) k)) n
ON CONFLICT (username) DO NOTHING;

INSERT INTO supaqueue_worker (name, host, pid, queues, concurrency, started_at, last_heartbeat_at)
VALUES ('bench:1:alive', 'bench', 1, '[]', 200, now(), now()),
       ('bench:2:stale', 'bench', 2, '[]', 10, now() - interval '1 hour', now() - interval '10 minutes')
ON CONFLICT (name) DO NOTHING;

CREATE TEMP TABLE seed AS
SELECT i, random() AS rq, random() AS rt, random() AS rs,
       now() - (%(jobs)s - i) * (interval '1 day' / %(jobs)s) AS created
FROM generate_series(1, %(jobs)s) i;

INSERT INTO supaqueue_job (queue_id, task_name, payload, args, status, priority, run_at, attempts,
                           max_attempts, key, enabled, result, last_error, created_at, started_at,
                           finished_at, owner_id, tenant_id)
SELECT q.id,
       CASE WHEN i %% 100000 = 7 THEN 'bench.tasks.rare'
            WHEN rt < 0.50 THEN 'bench.tasks.send_email' WHEN rt < 0.80 THEN 'bench.tasks.resize_image'
            WHEN rt < 0.95 THEN 'bench.tasks.sync_inventory' WHEN rt < 0.999 THEN 'bench.tasks.report'
            ELSE 'bench.tasks.audit' END,
       jsonb_build_object('n', i, 'user_id', i %% 5000), '[]'::jsonb, s.status, (i %% 3) - 1,
       CASE WHEN s.status = 'pending' AND i %% 50 = 0 THEN now() + interval '1 hour' ELSE s.created END,
       CASE WHEN s.status = 'pending' THEN 0 WHEN s.status = 'failed' THEN 3 ELSE 1 END,
       3,
       CASE WHEN i %% 10 = 0 THEN 'key-' || i END,
       NOT (s.status = 'pending' AND i %% 20 = 1),
       CASE WHEN s.status = 'successful' THEN jsonb_build_object('ok', true) END,
       CASE WHEN s.status = 'failed' THEN 'ValueError: bad input ' || i ELSE '' END,
       s.created,
       CASE WHEN s.status <> 'pending' THEN s.created + interval '50 ms' END,
       CASE WHEN s.status IN ('successful', 'failed', 'cancelled') THEN s.created + interval '100 ms' END,
       CASE WHEN i %% 100000 = 11 THEN (SELECT id FROM auth_user WHERE username = 'bench-rare')
            WHEN i %% 100 = 13 THEN (SELECT array_agg(id ORDER BY id) FROM auth_user
                                     WHERE username LIKE 'bench-user-%%')[1 + (i / 100) %% 20] END,
       CASE WHEN i %% 100000 = 19 THEN 'tenant-rare'
            WHEN i %% 100 = 17 THEN 'tenant-' || (i / 100) %% 50 END
FROM seed,
     LATERAL (SELECT CASE WHEN i > %(jobs)s - 300 THEN 'in_progress'
                          WHEN i > %(jobs)s * 0.98 - 300 THEN 'pending'
                          WHEN rs < 0.04 THEN 'failed' WHEN rs < 0.05 THEN 'cancelled'
                          ELSE 'successful' END AS status, created) s,
     LATERAL (SELECT id FROM supaqueue_queue WHERE name = CASE WHEN i %% 100000 = 3 THEN 'rare'
              WHEN rq < 0.7 THEN 'default' WHEN rq < 0.9 THEN 'emails' ELSE 'reports' END) q
ORDER BY i;

INSERT INTO supaqueue_currentjob (job_id, worker_id, attempt, started_at, lease_expires_at)
SELECT j.id, w.id, 1, now(), now() + interval '1 hour'
FROM supaqueue_job j, supaqueue_worker w WHERE j.status = 'in_progress' AND w.name = 'bench:1:alive';

INSERT INTO supaqueue_jobevent (job_id, kind, attempt, worker_name, at, duration, error_class,
                                error_message, traceback, retry_at)
SELECT j.id, e.kind, e.attempt, 'bench:1:alive', j.created_at + e.offs, e.duration, e.error_class,
       e.error_message, e.tb, NULL
FROM supaqueue_job j
CROSS JOIN LATERAL (VALUES
  ('started', 1, interval '50 ms', NULL::float8, '', '', ''),
  (CASE j.status WHEN 'successful' THEN 'succeeded' WHEN 'failed' THEN 'retried'
                 WHEN 'cancelled' THEN 'cancelled' END,
   1, interval '100 ms', 0.05,
   CASE WHEN j.status = 'failed' THEN (ARRAY['ValueError', 'TimeoutError', 'WorkerLost'])[1 + j.id %% 3]
        ELSE '' END,
   CASE WHEN j.status = 'failed' THEN 'bad input' ELSE '' END,
   CASE WHEN j.status = 'failed' THEN 'Traceback (most recent call last): ...' ELSE '' END),
  (CASE WHEN j.status = 'failed' THEN 'failed' END, 3, interval '300 ms', 0.05, 'ValueError',
   'bad input', 'Traceback (most recent call last): ...')
) AS e(kind, attempt, offs, duration, error_class, error_message, tb)
WHERE j.status <> 'pending' AND e.kind IS NOT NULL
ORDER BY j.id, e.offs;
"""


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def ensure_database(url: str) -> None:
    import environ
    import psycopg

    cfg = environ.Env.db_url_config(url)
    kw = {"host": cfg["HOST"] or None, "port": cfg["PORT"] or None, "user": cfg["USER"] or None}
    with psycopg.connect(dbname="postgres", autocommit=True, **{k: v for k, v in kw.items() if v}) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [cfg["NAME"]]).fetchone():
            conn.execute(f'CREATE DATABASE "{cfg["NAME"]}"')


def drop_database(url: str) -> None:
    import environ
    import psycopg
    from django.db import connections

    connections.close_all()
    cfg = environ.Env.db_url_config(url)
    kw = {"host": cfg["HOST"] or None, "port": cfg["PORT"] or None, "user": cfg["USER"] or None}
    with psycopg.connect(dbname="postgres", autocommit=True, **{k: v for k, v in kw.items() if v}) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{cfg["NAME"]}" WITH (FORCE)')


def fill(jobs: int) -> None:
    from django.db import connection

    from django_supaqueue.models import Job

    have = Job.objects.order_by("-id").values_list("id", flat=True).first()
    if have:
        print(f"the job table already holds jobs (last id {have}): not filling it again", flush=True)
        return
    print(f"filling {jobs:,} jobs and their events ...", flush=True)
    started = time.monotonic()
    with connection.cursor() as cur:
        for statement in FILL.split(";\n"):
            if statement.strip():
                cur.execute(statement, {"jobs": jobs})
    connection.close()
    import psycopg

    s = connection.settings_dict
    with psycopg.connect(
        host=s["HOST"], port=s["PORT"] or 5432, user=s["USER"], dbname=s["NAME"], autocommit=True
    ) as conn:
        conn.execute("VACUUM ANALYZE supaqueue_job")
        conn.execute("VACUUM ANALYZE supaqueue_jobevent")
    print(f"filled in {time.monotonic() - started:.0f} s", flush=True)


def screens() -> list[tuple[str, str]]:
    """(label, URL) of every admin screen, with the filters and searches that are hardest at scale."""
    from django.urls import reverse

    from django_supaqueue.models import Job, Queue, Worker

    jobs = reverse("admin:supaqueue_job_changelist")
    rare = Queue.objects.get(name="rare")
    failed = Job.objects.filter(status="failed").order_by("-id").values_list("id", flat=True).first()
    oldest = Job.objects.order_by("id").values_list("id", flat=True).first()
    worker = Worker.objects.get(name="bench:1:alive")

    def q(**params: object) -> str:
        return f"{jobs}?{urlencode(params)}"

    return [
        ("admin index", reverse("admin:index")),
        ("dashboard", reverse("admin:supaqueue_dashboard_changelist")),
        ("dashboard data (JSON)", reverse("admin:supaqueue_dashboard_data")),
        ("jobs: newest first", jobs),
        ("jobs: oldest first", q(o="1")),
        ("jobs: next page", q(after=oldest + 500_000)),
        ("jobs: status=failed", q(status__exact="failed")),
        ("jobs: status=pending", q(status__exact="pending")),
        ("jobs: status=in_progress", q(status__exact="in_progress")),
        ("jobs: status=successful", q(status__exact="successful")),
        ("jobs: queue=rare (20 jobs)", q(queue__id__exact=rare.pk)),
        ("jobs: queue=rare, status=successful", q(queue__id__exact=rare.pk, status__exact="successful")),
        ("jobs: task=rare (10 jobs)", q(task="bench.tasks.rare")),
        ("jobs: task=report, status=failed", q(task="bench.tasks.report", status__exact="failed")),
        ("jobs: held", q(held="yes")),
        ("jobs: created in the last hour", q(created="1h")),
        ("jobs: created over 7 days ago (none)", q(created="old")),
        ("jobs: owner=bench-user-3 (500 jobs)", q(owner="bench-user-3")),
        ("jobs: owner=bench-rare (10 jobs)", q(owner="bench-rare")),
        ("jobs: owner=bench-user-3, status=failed", q(owner="bench-user-3", status__exact="failed")),
        ("jobs: tenant=tenant-7 (200 jobs)", q(tenant="tenant-7")),
        ("jobs: tenant=tenant-rare (10 jobs)", q(tenant="tenant-rare")),
        ("jobs: search by id", q(q=str(failed))),
        ("jobs: search by key", q(q=f"key-{oldest + 9}")),
        ("jobs: search by task name", q(q="audit")),
        ("job detail", reverse("admin:supaqueue_job_change", args=[failed])),
        ("queues", reverse("admin:supaqueue_queue_changelist")),
        ("queue detail", reverse("admin:supaqueue_queue_change", args=[rare.pk])),
        ("workers", reverse("admin:supaqueue_worker_changelist")),
        ("worker detail", reverse("admin:supaqueue_worker_change", args=[worker.pk])),
        ("current jobs (leases)", reverse("admin:supaqueue_currentjob_changelist")),
    ]


def time_screens(repeat: int) -> list[tuple[str, float, float]]:
    from django.contrib.auth.models import User
    from django.test import Client

    user = User.objects.filter(username="bench-admin").first() or User.objects.create_superuser(
        "bench-admin", "bench@example.com", "bench"
    )
    client = Client()
    client.force_login(user)
    figures = []
    for label, url in screens():
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            response = client.get(url)
            times.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise SystemExit(f"{label}: {url} answered {response.status_code}")
        median = statistics.median(times)
        figures.append((label, median, max(times)))
        print(f"{label:<40} median {median * 1000:7.1f} ms   max {max(times) * 1000:7.1f} ms", flush=True)
    return figures


def time_bulk_retry() -> None:
    """Retry every failed job matching a filter (select across), the bulk path, then put them back."""
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.urls import reverse

    from django_supaqueue.models import Job

    client = Client()
    client.force_login(User.objects.get(username="bench-admin"))
    url = reverse("admin:supaqueue_job_changelist") + "?" + urlencode({"status__exact": "failed"})
    ids = list(Job.objects.filter(status="failed").order_by("-id").values_list("id", flat=True)[:100])
    started = time.perf_counter()
    client.post(
        url,
        {"action": "retry_now", "index": 0, "select_across": 1, "_selected_action": [str(i) for i in ids]},
    )
    elapsed = time.perf_counter() - started
    n = Job.objects.filter(status="pending", events__kind="manual_retry").count()
    print(f"{'bulk retry of every failed job':<40} {elapsed:7.1f} s for {n:,} jobs", flush=True)
    with connection.cursor() as cur:  # undo, so that a second run measures the same table
        cur.execute(
            "WITH r AS (DELETE FROM supaqueue_jobevent WHERE kind = 'manual_retry' RETURNING job_id) "
            "UPDATE supaqueue_job SET status = 'failed', run_at = created_at, "
            "finished_at = created_at + interval '100 ms' WHERE id IN (SELECT job_id FROM r)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5, help="requests per screen (median and max shown)")
    parser.add_argument("--bulk", action="store_true", help="also time a bulk retry of every failed job")
    parser.add_argument("--drop", action="store_true", help="drop the database at the end")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", DEFAULT_URL)
    ensure_database(url)
    setup_django(url)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    fill(args.jobs)
    time_screens(args.repeat)
    if args.bulk:
        time_bulk_retry()
    if args.drop:
        drop_database(url)


if __name__ == "__main__":
    main()

-- Wake workers on every insert into the job table, whoever inserts.
--
-- A trigger, so that the ORM, bulk inserts, job triggers and raw SQL all announce
-- their jobs. One statement-level trigger (not one per row) sends one notification
-- per queue per statement, so a bulk insert of 20,000 jobs costs one NOTIFY. The
-- payload is "<queue name> <epoch>": 0 when a job is runnable now, else the earliest
-- future run_at, which listening workers keep as a timer. The channel is
-- django_supaqueue.constants.CHANNEL, written in here by the migration.

CREATE OR REPLACE FUNCTION supaqueue_notify_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify(:'channel', q.name || ' ' ||
                    CASE WHEN n.first_run_at <= now() THEN '0'
                         ELSE extract(epoch FROM n.first_run_at)::text END)
  FROM (SELECT queue_id, min(run_at) AS first_run_at FROM supaqueue_new_jobs
        WHERE status = 'pending' AND enabled GROUP BY queue_id) n
  JOIN supaqueue_queue q ON q.id = n.queue_id;
  RETURN NULL;
END
$$;
CREATE TRIGGER supaqueue_job_notify AFTER INSERT ON supaqueue_job
REFERENCING NEW TABLE AS supaqueue_new_jobs
FOR EACH STATEMENT EXECUTE FUNCTION supaqueue_notify_jobs();

-- reverse
DROP TRIGGER IF EXISTS supaqueue_job_notify ON supaqueue_job;
DROP FUNCTION IF EXISTS supaqueue_notify_jobs();

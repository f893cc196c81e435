-- A deleted or truncated job takes its lease and its events with it.
--
-- What CASCADE foreign keys would do, kept by triggers because the lease and event
-- tables' keys to the job table are not database constraints (db_constraint=False):
-- a foreign key checks every inserted lease and event; these triggers run once per
-- DELETE or TRUNCATE statement. The queue's own statements delete a job's lease and
-- events first, so the DELETE trigger then finds nothing. TRUNCATE fires no DELETE
-- trigger, hence the second one: without it, TRUNCATE ... RESTART IDENTITY could show
-- a new job an old job's history. When one TRUNCATE names the lease and event tables
-- along with the job table (Django's flush does), they are empty by the time it fires
-- and it leaves them alone: a table the statement is still using cannot be truncated
-- again inside it.

CREATE OR REPLACE FUNCTION supaqueue_job_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM supaqueue_currentjob c USING supaqueue_deleted_jobs d WHERE c.job_id = d.id;
  DELETE FROM supaqueue_jobevent e USING supaqueue_deleted_jobs d WHERE e.job_id = d.id;
  RETURN NULL;
END
$$;
CREATE TRIGGER supaqueue_job_deleted AFTER DELETE ON supaqueue_job
REFERENCING OLD TABLE AS supaqueue_deleted_jobs
FOR EACH STATEMENT EXECUTE FUNCTION supaqueue_job_deleted();

CREATE OR REPLACE FUNCTION supaqueue_job_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM supaqueue_currentjob) OR EXISTS (SELECT 1 FROM supaqueue_jobevent) THEN
    TRUNCATE supaqueue_currentjob, supaqueue_jobevent;
  END IF;
  RETURN NULL;
END
$$;
CREATE TRIGGER supaqueue_job_truncated AFTER TRUNCATE ON supaqueue_job
FOR EACH STATEMENT EXECUTE FUNCTION supaqueue_job_truncated();

-- reverse
DROP TRIGGER IF EXISTS supaqueue_job_deleted ON supaqueue_job;
DROP FUNCTION IF EXISTS supaqueue_job_deleted();
DROP TRIGGER IF EXISTS supaqueue_job_truncated ON supaqueue_job;
DROP FUNCTION IF EXISTS supaqueue_job_truncated();

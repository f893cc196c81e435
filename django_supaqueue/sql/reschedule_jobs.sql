-- supaqueue_reschedule_jobs(): change when jobs not started yet run, their priority or
-- their attempts (@pgpm/jobs' reschedule_jobs).
--
-- The one definition: Python's django_supaqueue.reschedule() and the admin's Reschedule
-- action call this function (queue/actions.sql, reschedule). Only jobs not started yet
-- change, those waiting for dependencies or pending (held or not, a retry's back-off
-- included); a job claimed meanwhile is skipped, since the claim locks it first. A NULL
-- argument leaves that column as it is. The workers of the queues whose runnable jobs
-- changed are woken as the insert trigger wakes them, on
-- django_supaqueue.constants.CHANNEL (written in here by the migration), with the
-- earliest run_at, so that a job moved later or earlier is picked up on time.
-- Returns how many jobs changed; a call with nothing to change changes none.

CREATE OR REPLACE FUNCTION supaqueue_reschedule_jobs(
  job_ids bigint[],
  run_at timestamptz DEFAULT NULL,
  priority integer DEFAULT NULL,
  max_attempts integer DEFAULT NULL
) RETURNS integer
LANGUAGE plpgsql AS $supaqueue$
DECLARE
  ids bigint[] := supaqueue_reschedule_jobs.job_ids;
  new_run_at timestamptz := supaqueue_reschedule_jobs.run_at;
  new_priority integer := supaqueue_reschedule_jobs.priority;
  new_max_attempts integer := supaqueue_reschedule_jobs.max_attempts;
  changed integer;
BEGIN
  IF new_run_at IS NOT NULL AND (NOT isfinite(new_run_at)
      OR extract(year FROM new_run_at AT TIME ZONE 'UTC') NOT BETWEEN 1 AND 9999) THEN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = format(
      'run_at %s is not a time from year 1 to 9999 in UTC.', new_run_at);
  END IF;
  IF new_priority NOT BETWEEN -100 AND 100 THEN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = format(
      'priority %s is out of range: use -100..100 (higher runs first).', new_priority);
  END IF;
  IF new_max_attempts < 1 THEN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = format(
      'max_attempts must be a whole number from 1 to 2147483647, not %s.', new_max_attempts);
  END IF;
  IF ids IS NULL OR (new_run_at IS NULL AND new_priority IS NULL AND new_max_attempts IS NULL) THEN
    RETURN 0;
  END IF;
  UPDATE supaqueue_job j SET run_at = COALESCE(new_run_at, j.run_at),
                             priority = COALESCE(new_priority, j.priority),
                             max_attempts = COALESCE(new_max_attempts, j.max_attempts)
  WHERE j.id = ANY(ids) AND j.status IN ('waiting', 'pending');
  GET DIAGNOSTICS changed = ROW_COUNT;
  PERFORM pg_notify(:'channel', q.name || ' ' ||
                    CASE WHEN min(j.run_at) <= now() THEN '0' ELSE extract(epoch FROM min(j.run_at))::text END)
  FROM supaqueue_job j JOIN supaqueue_queue q ON q.id = j.queue_id
  WHERE changed > 0 AND j.id = ANY(ids) AND j.status = 'pending' AND j.enabled AND NOT q.paused
  GROUP BY q.name;
  RETURN changed;
END
$supaqueue$;

-- reverse
DROP FUNCTION IF EXISTS supaqueue_reschedule_jobs(bigint[], timestamptz, integer, integer);

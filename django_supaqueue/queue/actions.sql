-- Operator actions and maintenance: cancel, retry, run now, reschedule, hold, delete, pause, prune
-- (run by actions.py).
--
-- The operators' job statements (retry_now, run_now, set_enabled) end alike: given
-- upd, the jobs changed (id, queue_id, attempts), they write one event of the
-- given kind each and return the jobs' queues, so that the caller can wake the
-- workers that serve them. A job going back to pending keeps its key unless a
-- newer job not started yet holds it (see outcomes.sql).


-- name: cancel
-- Cancel waiting, pending or running jobs; return each with the attempt that is running, if any.
-- A running attempt keeps its lease until its body has stopped (outcomes.sql
-- records it as "stopped"); the dependents of cancelled jobs are settled at once.
WITH target AS (
  SELECT id FROM supaqueue_job
  WHERE id = ANY(%(job_id)s::bigint[]) AND status IN ('waiting', 'pending', 'in_progress')
  ORDER BY id FOR UPDATE
), lease AS (
  SELECT c.job_id, c.attempt FROM supaqueue_currentjob c JOIN target ON c.job_id = target.id
), upd AS (
  UPDATE supaqueue_job j SET status = 'cancelled', finished_at = now()
  FROM target WHERE j.id = target.id
  RETURNING j.id, j.attempts, j.has_dependents
), settled AS (
  SELECT supaqueue_settle_dependents(array_agg(id), array_agg('cancelled'::text))
  FROM upd WHERE has_dependents HAVING count(*) > 0
), event AS (
  INSERT INTO supaqueue_jobevent (job_id, kind, attempt, worker_name, at, error_class, error_message, traceback)
  SELECT id, 'cancelled', NULLIF(attempts, 0), '', now(), '', %(reason)s, '' FROM upd
)
SELECT upd.id, lease.attempt
FROM upd LEFT JOIN lease ON lease.job_id = upd.id, (SELECT count(*) FROM settled) s


-- name: notify_cancelled
-- Tell the workers running these attempts to stop them (the channel is constants.CANCEL_CHANNEL).
SELECT pg_notify(%(channel)s, a.job_id || ' ' || a.attempt)
FROM unnest(%(job_id)s::bigint[], %(attempt)s::int[]) AS a(job_id, attempt)


-- name: prune
-- Delete one batch of finished jobs older than their status's retention, with their events and edges.
-- Oldest first, through the partial index on finished_at, so a pass costs the same
-- whatever the table's size. A NULL retention makes its comparison NULL, so a
-- status kept forever never matches.
WITH doomed AS (
  SELECT id FROM supaqueue_job
  WHERE finished_at IS NOT NULL AND finished_at < now() - make_interval(secs => %(oldest)s)
    AND ((status = 'successful' AND finished_at < now() - make_interval(secs => %(successful)s))
      OR (status = 'failed' AND finished_at < now() - make_interval(secs => %(failed)s))
      OR (status = 'cancelled' AND finished_at < now() - make_interval(secs => %(cancelled)s)))
  ORDER BY finished_at LIMIT %(batch)s FOR UPDATE SKIP LOCKED
), events AS (
  DELETE FROM supaqueue_jobevent e USING doomed WHERE e.job_id = doomed.id
), edges AS (
  DELETE FROM supaqueue_jobdependency e USING doomed WHERE e.job_id = doomed.id OR e.depends_on_id = doomed.id
)
DELETE FROM supaqueue_job j USING doomed WHERE j.id = doomed.id


-- name: retry_failed
-- Give jobs of one queue that failed for good one more attempt each, pending now (oldest failures first).
WITH target AS (
  SELECT j.id FROM supaqueue_job j JOIN supaqueue_queue q ON q.id = j.queue_id
  WHERE q.name = %(queue)s AND j.status = 'failed'
  ORDER BY j.finished_at, j.id LIMIT %(limit)s FOR UPDATE OF j SKIP LOCKED
), upd AS (
  UPDATE supaqueue_job j SET status = 'pending', max_attempts = GREATEST(j.max_attempts, j.attempts + 1),
    run_at = now(), finished_at = NULL,
    key = CASE WHEN j.key IS NOT NULL AND EXISTS (
            SELECT 1 FROM supaqueue_job p
            WHERE p.key = j.key AND p.status IN ('waiting', 'pending') AND p.id <> j.id)
          THEN NULL ELSE j.key END
  FROM target WHERE j.id = target.id
  RETURNING j.id, j.attempts
), event AS (
  INSERT INTO supaqueue_jobevent (job_id, kind, attempt, worker_name, at, error_class, error_message, traceback)
  SELECT id, 'manual_retry', attempts, %(worker_name)s, now(), '', %(reason)s, '' FROM upd
)
SELECT id FROM upd ORDER BY id


-- name: retry_now
-- Make failed and cancelled jobs, and jobs waiting out a retry back-off, pending now, held or not.
-- A job with no attempts left gets one more. Of several targets sharing a key, the
-- pending one (else the newest) keeps it; a newer job not started yet keeps it
-- from all of them.
WITH target AS (
  SELECT id FROM supaqueue_job
  WHERE id = ANY(%(job_id)s::bigint[])
    AND (status IN ('failed', 'cancelled')
         OR (status = 'pending' AND attempts > 0 AND run_at > now()))
    AND NOT EXISTS (SELECT 1 FROM supaqueue_currentjob c WHERE c.job_id = supaqueue_job.id)  -- a cancelled body still stopping
  ORDER BY id FOR UPDATE
), ranked AS (
  SELECT j.id, row_number() OVER (
           PARTITION BY j.key ORDER BY (j.status = 'pending') DESC, j.id DESC) AS rn
  FROM supaqueue_job j JOIN target t ON t.id = j.id
), upd AS (
  UPDATE supaqueue_job j SET status = 'pending', run_at = now(), enabled = true, finished_at = NULL,
    max_attempts = GREATEST(j.max_attempts, j.attempts + 1),
    key = CASE WHEN j.key IS NULL THEN NULL
               WHEN r.rn > 1 OR EXISTS (SELECT 1 FROM supaqueue_job p
                                        WHERE p.key = j.key AND p.status IN ('waiting', 'pending')
                                          AND p.id <> j.id)
               THEN NULL ELSE j.key END
  FROM ranked r WHERE j.id = r.id
  RETURNING j.id, j.queue_id, j.attempts
), event AS (
  INSERT INTO supaqueue_jobevent (job_id, kind, attempt, worker_name, at, error_class, error_message, traceback)
  SELECT id, %(kind)s, NULLIF(attempts, 0), '', now(), '', %(reason)s, '' FROM upd
)
SELECT upd.id, q.name FROM upd JOIN supaqueue_queue q ON q.id = upd.queue_id


-- name: run_now
-- Make pending jobs whose run_at is in the future runnable now (a held job stays held).
WITH upd AS (
  UPDATE supaqueue_job j SET run_at = now()
  WHERE j.id = ANY(%(job_id)s::bigint[]) AND j.status = 'pending' AND j.run_at > now()
  RETURNING j.id, j.queue_id, j.attempts
), event AS (
  INSERT INTO supaqueue_jobevent (job_id, kind, attempt, worker_name, at, error_class, error_message, traceback)
  SELECT id, %(kind)s, NULLIF(attempts, 0), '', now(), '', %(reason)s, '' FROM upd
)
SELECT upd.id, q.name FROM upd JOIN supaqueue_queue q ON q.id = upd.queue_id


-- name: set_enabled
-- Hold pending jobs (enabled false: no worker claims them) or release them.
WITH upd AS (
  UPDATE supaqueue_job j SET enabled = %(enabled)s
  WHERE j.id = ANY(%(job_id)s::bigint[]) AND j.status = 'pending' AND j.enabled <> %(enabled)s
  RETURNING j.id, j.queue_id, j.attempts
), event AS (
  INSERT INTO supaqueue_jobevent (job_id, kind, attempt, worker_name, at, error_class, error_message, traceback)
  SELECT id, %(kind)s, NULLIF(attempts, 0), '', now(), '', %(reason)s, '' FROM upd
)
SELECT upd.id, q.name FROM upd JOIN supaqueue_queue q ON q.id = upd.queue_id


-- name: reschedule
-- Change when jobs not started yet run, their priority or their attempts; return how many changed.
-- The database function is the one definition (sql/reschedule_jobs.sql, migration
-- 0004), for SQL callers and this module alike; it wakes the queues it made runnable.
-- A delay (run_in) counts from the database's clock, as an enqueue's does (enqueue.sql).
SELECT supaqueue_reschedule_jobs(%(job_id)s::bigint[],
                                 COALESCE(%(run_at)s::timestamptz, now() + %(run_in)s::interval),
                                 %(priority)s::int, %(max_attempts)s::int)


-- name: settle_deleted
-- Settle the dependents of jobs about to be deleted: for them, a deleted job counts as cancelled.
-- In its own statement, before delete, so that the function sees the edges.
WITH target AS (
  SELECT id FROM supaqueue_job
  WHERE id = ANY(%(job_id)s::bigint[]) AND status <> 'in_progress' AND has_dependents
  ORDER BY id FOR UPDATE
)
SELECT supaqueue_settle_dependents(array_agg(id), array_agg('cancelled'::text))
FROM target HAVING count(*) > 0


-- name: delete
-- Delete jobs that are not running, with their events and edges; return the ids deleted.
-- Events and edges go in the same statement: the foreign keys are deferred, and a
-- job's history has no meaning without the job.
WITH target AS (
  SELECT id FROM supaqueue_job WHERE id = ANY(%(job_id)s::bigint[]) AND status <> 'in_progress'
  ORDER BY id FOR UPDATE
), events AS (
  DELETE FROM supaqueue_jobevent e USING target WHERE e.job_id = target.id
), edges AS (
  DELETE FROM supaqueue_jobdependency e USING target WHERE e.job_id = target.id OR e.depends_on_id = target.id
), gone AS (
  DELETE FROM supaqueue_job j USING target WHERE j.id = target.id RETURNING j.id
)
SELECT id FROM gone


-- name: set_paused
-- Pause or resume queues; return the names that changed.
UPDATE supaqueue_queue SET paused = %(paused)s, updated_at = now()
WHERE name = ANY(%(names)s::text[]) AND paused <> %(paused)s
RETURNING name

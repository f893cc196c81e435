-- How attempts end: success, failure and retry, release, recovery of expired leases (run by outcomes.py).
--
-- Every statement takes a batch of attempts and is one CTE chain, so that a batch
-- costs one round trip whatever its size, and so that the lease fence (job,
-- attempt, worker) is checked in the same statement that writes the outcome: the
-- lease is deleted first, and only the attempts whose lease was still there are
-- written. A job that is no longer in progress (cancelled while its attempt ran)
-- gets a "stopped" event instead of its outcome.
--
-- A job going back to pending keeps its key unless a newer job that has not
-- started holds it (enqueued with that key while this one ran): the key stays with
-- the newer job, as in graphile-worker, and the unique index of pending keys is
-- never violated. Finished jobs that others depend on are handed to
-- supaqueue_settle_dependents() (migration 0009 says why it is a function), only
-- when one of them has dependents, so jobs without any pay for one boolean column.


-- name: complete
-- Record successful attempts; return the jobs whose lease still matched.
-- Each job's values are read from the arrays by its place in them
-- (array_position), not by joining the unnested arrays: the planner knows
-- neither how long the arrays are nor, right after a burst of enqueues, how many
-- jobs are in progress, and a join it believes to be one row by one row became a
-- nested loop over every running job of the worker for every attempt of the
-- batch (a third of the worker's database time in a drain). Each step here costs
-- the same whatever the plan: a probe or a scan of this worker's leases, a probe
-- per job by id ("IS NOT DISTINCT FROM" keeps the index of running jobs, which
-- the planner would walk whole, out of its choices).
WITH lease AS (
  DELETE FROM supaqueue_currentjob c
  WHERE c.job_id = ANY(%(job_id)s::bigint[]) AND c.worker_id = %(worker_id)s
    AND c.attempt = (%(attempt)s::int[])[array_position(%(job_id)s::bigint[], c.job_id)]
  RETURNING c.job_id, c.attempt, array_position(%(job_id)s::bigint[], c.job_id) AS n
), done AS (
  UPDATE supaqueue_job j SET status = 'successful', finished_at = now(), last_error = '',
                             result = ((%(result)s::text[])[array_position(%(job_id)s::bigint[], j.id)])::jsonb
  WHERE j.id = ANY(ARRAY(SELECT job_id FROM lease)) AND j.status IS NOT DISTINCT FROM 'in_progress'
  RETURNING j.id, j.has_dependents
), settled AS (
  SELECT supaqueue_settle_dependents(array_agg(id), array_agg('successful'::text))
  FROM done WHERE has_dependents HAVING count(*) > 0
), event AS (
  INSERT INTO supaqueue_jobevent (job_id, kind, attempt, worker_name, at, duration, error_class,
                                  error_message, traceback, http_status)
  SELECT lease.job_id,
         CASE WHEN lease.job_id = ANY(ARRAY(SELECT id FROM done)) THEN 'succeeded' ELSE 'stopped' END,
         lease.attempt, %(worker_name)s, now(), (%(duration)s::float8[])[lease.n], '', '', '',
         (%(http_status)s::int[])[lease.n]
  FROM lease
)
SELECT id FROM done, (SELECT count(*) FROM settled) s


-- name: fail
-- Record failed attempts: pending again after a back-off, or failed for good; return what became of each.
-- From upd on, the same as recover_expired: decide retry or final failure, compute
-- the back-off in the database (so it always uses the queue's current settings),
-- and write one event per attempt. An uncounted attempt (nothing was attempted)
-- goes back to pending with its attempt given back. As in complete, each job's
-- values are read from the arrays by its place in them, and the job is found by
-- its id: "IS NOT DISTINCT FROM" keeps the planner off the index of running jobs,
-- which it would otherwise walk whole for every attempt of the batch whenever
-- its statistics say that few jobs run (a drain that follows a burst of enqueues).
WITH taken AS (
  DELETE FROM supaqueue_currentjob c
  WHERE c.job_id = ANY(%(job_id)s::bigint[]) AND c.worker_id = %(worker_id)s
    AND c.attempt = (%(attempt)s::int[])[array_position(%(job_id)s::bigint[], c.job_id)]
  RETURNING c.job_id, c.attempt, array_position(%(job_id)s::bigint[], c.job_id) AS n
), lease AS (
  SELECT t.job_id, t.attempt, (%(error_class)s::text[])[t.n] AS error_class,
         (%(error_message)s::text[])[t.n] AS error_message, (%(traceback)s::text[])[t.n] AS traceback,
         (%(duration)s::float8[])[t.n] AS duration, (%(retry_at)s::timestamptz[])[t.n] AS retry_at,
         (%(backoff)s::float8[])[t.n] AS backoff, (%(backoff_max)s::float8[])[t.n] AS backoff_max,
         (%(final)s::bool[])[t.n] AS final, (%(http_status)s::int[])[t.n] AS http_status,
         (%(uncounted)s::bool[])[t.n] AS uncounted, %(worker_name)s::text AS worker_name
  FROM taken t
), upd AS (
  UPDATE supaqueue_job j SET
    status = CASE WHEN l.uncounted OR (j.attempts < j.max_attempts AND NOT l.final) THEN 'pending'
             ELSE 'failed' END,
    run_at = CASE WHEN l.uncounted OR (j.attempts < j.max_attempts AND NOT l.final)
             THEN COALESCE(l.retry_at, now() + make_interval(
               secs => LEAST(COALESCE(l.backoff_max, q.retry_backoff_max, %(default_backoff_max)s),
                             COALESCE(l.backoff, q.retry_backoff, %(default_backoff)s)
                               * power(2, LEAST(j.attempts - 1, 60)))
                       * (0.5 + random() * 0.5)))
             ELSE j.run_at END,
    finished_at = CASE WHEN l.uncounted OR (j.attempts < j.max_attempts AND NOT l.final) THEN NULL
                  ELSE now() END,
    attempts = j.attempts - CASE WHEN l.uncounted THEN 1 ELSE 0 END,
    key = CASE WHEN j.key IS NOT NULL AND EXISTS (
            SELECT 1 FROM supaqueue_job p
            WHERE p.key = j.key AND p.status IN ('waiting', 'pending') AND p.id <> j.id)
          THEN NULL ELSE j.key END,
    last_error = l.error_class || ': ' || l.error_message
  FROM lease l, supaqueue_queue q
  WHERE j.id = l.job_id AND q.id = j.queue_id AND j.status IS NOT DISTINCT FROM 'in_progress'
  RETURNING j.id, j.status, j.run_at, l.attempt, l.worker_name, l.duration, l.error_class,
            l.error_message, l.traceback, l.http_status, j.has_dependents
), stopped AS (
  INSERT INTO supaqueue_jobevent (job_id, kind, attempt, worker_name, at, duration, error_class,
                                  error_message, traceback)
  SELECT l.job_id, 'stopped', l.attempt, l.worker_name, now(), l.duration, l.error_class,
         l.error_message, l.traceback
  FROM lease l WHERE l.job_id NOT IN (SELECT id FROM upd)
), settled AS (
  SELECT supaqueue_settle_dependents(array_agg(id), array_agg(status::text))
  FROM upd WHERE has_dependents AND status = 'failed' HAVING count(*) > 0
), event AS (
  INSERT INTO supaqueue_jobevent (job_id, kind, attempt, worker_name, at, duration, error_class,
                                  error_message, traceback, retry_at, http_status)
  SELECT id, CASE WHEN status = 'pending' THEN 'retried' ELSE 'failed' END, attempt,
         worker_name, now(), duration, error_class, error_message, traceback,
         CASE WHEN status = 'pending' THEN run_at END, http_status
  FROM upd
)
SELECT id, status, run_at FROM upd, (SELECT count(*) FROM settled) s


-- name: recover_expired
-- Fail the attempts whose lease ran out (their worker is lost), as fail fails an attempt.
-- Any worker may run it; SKIP LOCKED keeps two recoverers from fighting over the
-- same lease. The attempt's error is django_supaqueue.exceptions.WorkerLost; from
-- upd on, the statement is fail's.
WITH expired AS (
  SELECT c.id, w.name, w.last_heartbeat_at
  FROM supaqueue_currentjob c LEFT JOIN supaqueue_worker w ON w.id = c.worker_id
  WHERE c.lease_expires_at < now()
  ORDER BY c.id LIMIT %(limit)s FOR UPDATE OF c SKIP LOCKED
), lease AS (
  DELETE FROM supaqueue_currentjob c USING expired e
  WHERE c.id = e.id
  RETURNING c.job_id, c.attempt, 'django_supaqueue.exceptions.WorkerLost'::text AS error_class,
    'worker ' || COALESCE(e.name, '#' || c.worker_id) || ' stopped renewing its lease ('
      || COALESCE('last heartbeat ' || to_char(e.last_heartbeat_at AT TIME ZONE 'UTC',
                                               'YYYY-MM-DD HH24:MI:SS') || ' UTC',
                  'its registration is gone') || ')'
      AS error_message,
    ''::text AS traceback, extract(epoch FROM now() - c.started_at)::float8 AS duration,
    NULL::timestamptz AS retry_at, NULL::float8 AS backoff, NULL::float8 AS backoff_max,
    false AS final, NULL::int AS http_status, false AS uncounted,
    COALESCE(e.name, '#' || c.worker_id) AS worker_name
), upd AS (
  UPDATE supaqueue_job j SET
    status = CASE WHEN l.uncounted OR (j.attempts < j.max_attempts AND NOT l.final) THEN 'pending'
             ELSE 'failed' END,
    run_at = CASE WHEN l.uncounted OR (j.attempts < j.max_attempts AND NOT l.final)
             THEN COALESCE(l.retry_at, now() + make_interval(
               secs => LEAST(COALESCE(l.backoff_max, q.retry_backoff_max, %(default_backoff_max)s),
                             COALESCE(l.backoff, q.retry_backoff, %(default_backoff)s)
                               * power(2, LEAST(j.attempts - 1, 60)))
                       * (0.5 + random() * 0.5)))
             ELSE j.run_at END,
    finished_at = CASE WHEN l.uncounted OR (j.attempts < j.max_attempts AND NOT l.final) THEN NULL
                  ELSE now() END,
    attempts = j.attempts - CASE WHEN l.uncounted THEN 1 ELSE 0 END,
    key = CASE WHEN j.key IS NOT NULL AND EXISTS (
            SELECT 1 FROM supaqueue_job p
            WHERE p.key = j.key AND p.status IN ('waiting', 'pending') AND p.id <> j.id)
          THEN NULL ELSE j.key END,
    last_error = l.error_class || ': ' || l.error_message
  FROM lease l, supaqueue_queue q
  WHERE j.id = l.job_id AND q.id = j.queue_id AND j.status IS NOT DISTINCT FROM 'in_progress'
  RETURNING j.id, j.status, j.run_at, l.attempt, l.worker_name, l.duration, l.error_class,
            l.error_message, l.traceback, l.http_status, j.has_dependents
), stopped AS (
  INSERT INTO supaqueue_jobevent (job_id, kind, attempt, worker_name, at, duration, error_class,
                                  error_message, traceback)
  SELECT l.job_id, 'stopped', l.attempt, l.worker_name, now(), l.duration, l.error_class,
         l.error_message, l.traceback
  FROM lease l WHERE l.job_id NOT IN (SELECT id FROM upd)
), settled AS (
  SELECT supaqueue_settle_dependents(array_agg(id), array_agg(status::text))
  FROM upd WHERE has_dependents AND status = 'failed' HAVING count(*) > 0
), event AS (
  INSERT INTO supaqueue_jobevent (job_id, kind, attempt, worker_name, at, duration, error_class,
                                  error_message, traceback, retry_at, http_status)
  SELECT id, CASE WHEN status = 'pending' THEN 'retried' ELSE 'failed' END, attempt,
         worker_name, now(), duration, error_class, error_message, traceback,
         CASE WHEN status = 'pending' THEN run_at END, http_status
  FROM upd
)
SELECT id, status, run_at FROM upd, (SELECT count(*) FROM settled) s


-- name: release
-- Give back attempts a stopping worker will not finish: pending again, the attempt not counted.
-- The job keeps its run_at (its place in line) unless a delay makes it runnable
-- only that many seconds from now.
WITH d AS (
  SELECT * FROM unnest(%(job_id)s::bigint[], %(attempt)s::int[]) AS d(job_id, attempt)
), lease AS (
  DELETE FROM supaqueue_currentjob c USING d
  WHERE c.job_id = d.job_id AND c.attempt = d.attempt AND c.worker_id = %(worker_id)s
  RETURNING c.job_id, c.attempt, c.started_at
), upd AS (
  UPDATE supaqueue_job j SET status = 'pending',
    run_at = CASE WHEN %(delay)s > 0 THEN now() + %(delay)s * interval '1 second'
             ELSE LEAST(j.run_at, now()) END,
    attempts = GREATEST(j.attempts - 1, 0),
    key = CASE WHEN j.key IS NOT NULL AND EXISTS (
            SELECT 1 FROM supaqueue_job p
            WHERE p.key = j.key AND p.status IN ('waiting', 'pending') AND p.id <> j.id)
          THEN NULL ELSE j.key END
  FROM lease WHERE j.id = lease.job_id AND j.status = 'in_progress'
  RETURNING j.id
), event AS (
  INSERT INTO supaqueue_jobevent (job_id, kind, attempt, worker_name, at, duration, error_class, error_message,
                                  traceback)
  SELECT job_id, 'released', attempt, %(worker_name)s, now(),
         extract(epoch FROM now() - started_at)::float8, '', %(message)s, ''
  FROM lease
)
SELECT id FROM upd


-- name: notify_queues
-- Wake every listening worker of these queues (the channel is constants.CHANNEL).
SELECT pg_notify(%(channel)s, name || ' 0') FROM unnest(%(names)s::text[]) AS name


-- name: notify_groups
-- Wake the workers of every queue holding the next jobs of serial groups whose job ended.
SELECT pg_notify(%(channel)s, q.name || ' 0') FROM supaqueue_queue q
WHERE NOT q.paused AND q.id IN (
  SELECT j.queue_id FROM supaqueue_job j
  WHERE j.serial_group = ANY(%(groups)s::text[]) AND j.status = 'pending' AND j.enabled)

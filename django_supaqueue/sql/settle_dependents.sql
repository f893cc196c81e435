-- Settle the dependents of finished jobs: count them down, make them pending, or
-- cancel them (transitively) when a dependency failed for good or was cancelled.
--
-- In the database, in a function, for one reason: a function's statements take fresh
-- snapshots. The statement that finishes a job may have waited on a lock held by a
-- transaction that was adding a dependent of that job; by the time the function runs,
-- that dependent's edge is committed and visible, so no dependent is ever left
-- waiting. Dependents are counted down on their own rows, so two dependencies that
-- finish at the same moment in two transactions serialise on the row lock. Pending
-- dependents wake their queues' workers on django_supaqueue.constants.CHANNEL,
-- written in here by the migration.

CREATE OR REPLACE FUNCTION supaqueue_settle_dependents(finished bigint[], outcomes text[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  ids bigint[] := finished;
  outs text[] := outcomes;
  touched integer := 0;
  n integer;
BEGIN
  WHILE ids IS NOT NULL AND cardinality(ids) > 0 LOOP
    WITH settled AS (
      UPDATE supaqueue_jobdependency e SET settled = true
      FROM unnest(ids, outs) AS f(id, outcome)
      WHERE e.depends_on_id = f.id AND NOT e.settled
      RETURNING e.job_id, e.depends_on_id, f.outcome
    ), per AS (
      SELECT job_id, count(*)::int AS n,
             min(depends_on_id) FILTER (WHERE outcome <> 'successful') AS bad_id,
             min(outcome) FILTER (WHERE outcome <> 'successful') AS bad_outcome
      FROM settled GROUP BY job_id
    ), upd AS (
      UPDATE supaqueue_job d SET
        waiting_for = GREATEST(d.waiting_for - per.n, 0),
        status = CASE WHEN per.bad_id IS NOT NULL AND d.on_dependency_failure = 'cancel' THEN 'cancelled'
                      WHEN d.waiting_for - per.n <= 0 THEN 'pending'
                      ELSE d.status END,
        finished_at = CASE WHEN per.bad_id IS NOT NULL AND d.on_dependency_failure = 'cancel'
                           THEN now() END
      FROM per WHERE d.id = per.job_id AND d.status = 'waiting'
      RETURNING d.id, d.status, d.queue_id, d.run_at, d.enabled, per.bad_id, per.bad_outcome
    ), event AS (
      INSERT INTO supaqueue_jobevent (job_id, kind, attempt, worker_name, at, error_class,
                                      error_message, traceback)
      SELECT id, 'cancelled', NULL, '', now(), 'django_supaqueue.exceptions.DependencyFailed',
             'job #' || bad_id || ', which this job depends on, ' ||
             CASE WHEN bad_outcome = 'failed' THEN 'failed' ELSE 'was cancelled' END, ''
      FROM upd WHERE status = 'cancelled'
    ), woken AS (
      SELECT pg_notify(:'channel', q.name || ' ' ||
                       CASE WHEN min(u.run_at) <= now() THEN '0' ELSE extract(epoch FROM min(u.run_at))::text END)
      FROM upd u JOIN supaqueue_queue q ON q.id = u.queue_id
      WHERE u.status = 'pending' AND u.enabled GROUP BY q.name
    )
    SELECT array_agg(id) FILTER (WHERE status = 'cancelled'), count(*)::int + (SELECT count(*) FROM woken) * 0
    INTO ids, n FROM upd;
    touched := touched + n;
    outs := array_fill('cancelled'::text, ARRAY[COALESCE(cardinality(ids), 0)]);
  END LOOP;
  RETURN touched;
END
$$;

-- reverse
DROP FUNCTION IF EXISTS supaqueue_settle_dependents(bigint[], text[]);

-- Writing jobs with dependencies (run by graph.py).
--
-- A job graph: jobs with dependencies start as "waiting" with a count of the
-- dependencies still to finish (waiting_for); jobs other jobs depend on are marked
-- (has_dependents), so that their end settles the dependents
-- (supaqueue_settle_dependents(), migration 0009).


-- name: mark_dependencies
-- Lock and mark existing jobs that new jobs will depend on; return their latest statuses.
-- Marking locks them until the dependents are committed: a dependency finishing
-- meanwhile waits, then sees the mark and settles them. The status read here is
-- the latest committed one, after any such wait.
UPDATE supaqueue_job j SET has_dependents = true
FROM (SELECT id FROM supaqueue_job WHERE id = ANY(%(ids)s::bigint[]) ORDER BY id FOR NO KEY UPDATE) d
WHERE j.id = d.id
RETURNING j.id, j.status


-- name: insert_graph
-- Write the jobs of a graph, waiting or pending, in their order; return whole jobs (see rows.sql).
-- Keys are met as by every job insert (see enqueue.sql): a keyed job that meets a
-- job not started yet is not written, and that job stands in for it.
INSERT INTO supaqueue_job (queue_id, task_name, payload, args, status, priority, run_at, attempts,
                           max_attempts, key, enabled, last_error, created_at, http_path, owner_id, tenant_id,
                           trace_context, serial_group, waiting_for, has_dependents, on_dependency_failure,
                           http_method)
SELECT q.id, u.task_name, u.payload::jsonb, u.args::jsonb,
       CASE WHEN u.waiting_for > 0 THEN 'waiting' ELSE 'pending' END,
       COALESCE(u.priority, q.priority, %(default_priority)s::int),
       COALESCE(u.run_at, now()) + COALESCE(u.run_in, interval '0'), 0,
       COALESCE(u.max_attempts, q.max_attempts, %(default_max_attempts)s::int),
       u.key, true, '', now(), u.http_path, u.owner_id, u.tenant_id, %(trace)s::jsonb, u.serial_group,
       u.waiting_for, u.has_dependents, u.on_failure, u.http_method
FROM unnest(%(queue)s::text[], %(task_name)s::text[], %(payload)s::text[], %(args)s::text[],
            %(priority)s::int[], %(run_at)s::timestamptz[], %(max_attempts)s::int[], %(key)s::text[],
            %(http_path)s::text[], %(owner_id)s::int[], %(tenant_id)s::text[], %(serial_group)s::text[],
            %(waiting_for)s::int[], %(has_dependents)s::bool[], %(on_failure)s::text[],
            %(http_method)s::text[], %(run_in)s::interval[])
     WITH ORDINALITY AS u(queue, task_name, payload, args, priority, run_at, max_attempts, key, http_path,
                          owner_id, tenant_id, serial_group, waiting_for, has_dependents, on_failure,
                          http_method, run_in, n)
JOIN supaqueue_queue q ON q.name = u.queue
ORDER BY u.n
ON CONFLICT (key) WHERE status IN ('waiting', 'pending') AND key IS NOT NULL DO NOTHING
RETURNING id, queue_id, task_name, payload::text, args::text, status, priority, run_at, attempts,
       max_attempts, key, enabled, result::text, last_error, created_at, started_at, finished_at,
       http_path, owner_id, tenant_id, trace_context::text, serial_group, waiting_for, has_dependents,
       on_dependency_failure, http_method


-- name: insert_dependencies
-- Write the edges of a graph: which job waits for which, in what position, already settled or not.
INSERT INTO supaqueue_jobdependency (job_id, depends_on_id, position, settled)
SELECT * FROM unnest(%(job_id)s::bigint[], %(depends_on_id)s::bigint[], %(position)s::int[],
                     %(settled)s::bool[])


-- name: settle_now
-- Settle the dependents of dependencies that had finished before their dependents were written.
SELECT supaqueue_settle_dependents(%(ids)s::bigint[], %(outcomes)s::text[])


-- name: status_of
-- The states settling may have changed, read back after a graph is written.
SELECT id, status, waiting_for, finished_at FROM supaqueue_job WHERE id = ANY(%(ids)s::bigint[])

-- Writing jobs: one, many, many of one task, with a key mode; creating queues (run by enqueue.py).
--
-- Every job insert reads its queue's defaults in the database (priority,
-- max_attempts, then SUPAQUEUE's default_* parameters), so a long-lived web process
-- never enqueues with stale queue settings, and meets keys on the same conflict
-- target: the partial unique index of keys held by jobs not started yet (waiting
-- or pending), ON CONFLICT (key) WHERE status IN ('waiting', 'pending') AND key IS
-- NOT NULL. A job whose queue does not exist is not written (the JOIN finds no
-- queue): the caller creates the queue and tries again. The inserts differ in the
-- columns they are given; graph.sql's insert_graph and triggers.sql's function
-- are the others. A run_at given as a delay (run_in) is added to now(), the
-- database's clock, never the enqueuing host's, which may be minutes off.


-- name: insert_one
-- Write one job, unless a job not started yet holds its key; return what the database filled in.
-- The single enqueue, prepared once per connection and run by libpq (prepared.py).
INSERT INTO supaqueue_job (queue_id, task_name, payload, args, status, priority, run_at, attempts,
                           max_attempts, key, enabled, last_error, created_at, http_path, owner_id, tenant_id,
                           trace_context, serial_group, http_method)
SELECT q.id, %(task_name)s, %(payload)s::jsonb, %(args)s::jsonb, 'pending',
       COALESCE(%(priority)s::int, q.priority, %(default_priority)s::int),
       COALESCE(%(run_at)s::timestamptz, now()) + COALESCE(%(run_in)s::interval, interval '0'), 0,
       COALESCE(%(max_attempts)s::int, q.max_attempts, %(default_max_attempts)s::int),
       %(key)s, true, '', now(), %(http_path)s, %(owner_id)s, %(tenant_id)s, %(trace)s::jsonb,
       %(serial_group)s, %(http_method)s
FROM supaqueue_queue q WHERE q.name = %(queue)s
ON CONFLICT (key) WHERE status IN ('waiting', 'pending') AND key IS NOT NULL DO NOTHING
RETURNING id, queue_id, priority, run_at, max_attempts, created_at


-- name: insert_many
-- Write many jobs from columns of values, in their order, less those whose key is held.
-- The arrays travel in binary; rows come back in the specs' order (ids are drawn
-- in that order), without the keyed specs that met a job not started yet. Each job
-- has its own tenant (enqueue_many with mixed tenants); HTTP calls and owners are
-- written one at a time (insert_one).
INSERT INTO supaqueue_job (queue_id, task_name, payload, args, status, priority, run_at, attempts,
                           max_attempts, key, enabled, last_error, created_at, trace_context, serial_group,
                           tenant_id)
SELECT q.id, u.task_name, u.payload::jsonb, u.args::jsonb, 'pending',
       COALESCE(u.priority, q.priority, %(default_priority)s::int),
       COALESCE(u.run_at, now()) + COALESCE(u.run_in, interval '0'), 0,
       COALESCE(u.max_attempts, q.max_attempts, %(default_max_attempts)s::int),
       u.key, true, '', now(), %(trace)s::jsonb, u.serial_group, u.tenant_id
FROM unnest(%(queue)b::text[], %(task_name)b::text[], %(payload)b::text[], %(args)b::text[],
            %(priority)b::int[], %(run_at)b::timestamptz[], %(max_attempts)b::int[], %(key)b::text[],
            %(serial_group)b::text[], %(tenant_id)b::text[], %(run_in)b::interval[])
     WITH ORDINALITY AS u(queue, task_name, payload, args, priority, run_at, max_attempts, key,
                          serial_group, tenant_id, run_in, n)
JOIN supaqueue_queue q ON q.name = u.queue
ORDER BY u.n
ON CONFLICT (key) WHERE status IN ('waiting', 'pending') AND key IS NOT NULL DO NOTHING
RETURNING id, queue_id, priority, run_at, max_attempts, created_at, key


-- name: insert_batch
-- Write many jobs of one task with one set of options (enqueue_many); return one row for them all.
-- Only the payload and the key differ from job to job, so only they travel as
-- arrays, and every other column (the tenant, and an HTTP queue's path, method
-- and owner for enqueue_http_many) is one parameter. The rows written share every
-- value they return but their id (and key), so one row comes back: the ids and
-- keys in insertion order (ids are drawn in that order), and the shared values
-- once: decoding a row per job cost a third of a large call.
WITH written AS (
  INSERT INTO supaqueue_job (queue_id, task_name, payload, args, status, priority, run_at, attempts,
                             max_attempts, key, enabled, last_error, created_at, trace_context, serial_group,
                             tenant_id, http_path, http_method, owner_id)
  SELECT q.id, %(task_name)s, u.payload::jsonb, %(args)s::jsonb, 'pending',
         COALESCE(%(priority)s::int, q.priority, %(default_priority)s::int),
         COALESCE(%(run_at)s::timestamptz, now()) + COALESCE(%(run_in)s::interval, interval '0'), 0,
         COALESCE(%(max_attempts)s::int, q.max_attempts, %(default_max_attempts)s::int),
         u.key, true, '', now(), %(trace)s::jsonb, %(serial_group)s, %(tenant_id)s,
         %(http_path)s, %(http_method)s, %(owner_id)s
  FROM unnest(%(payload)b::text[], %(key)b::text[]) WITH ORDINALITY AS u(payload, key, n)
  JOIN supaqueue_queue q ON q.name = %(queue)s
  ORDER BY u.n
  ON CONFLICT (key) WHERE status IN ('waiting', 'pending') AND key IS NOT NULL DO NOTHING
  RETURNING id, queue_id, priority, run_at, max_attempts, created_at, key
)
SELECT array_agg(id ORDER BY id), CASE WHEN count(key) > 0 THEN array_agg(key ORDER BY id) END,
       min(queue_id), min(priority), min(run_at), min(max_attempts), min(created_at)
FROM written


-- name: upsert
-- Write jobs whose key, when a job not started yet holds it, gives that job the new values (key modes).
-- The key modes other than "dedupe": the job holding the key takes the new call's
-- values (all of them for "replace", all but run_at for "preserve_run_at") and
-- keeps its id, its history and its place in any dependency graph. Returns whole
-- jobs (see rows.sql).
INSERT INTO supaqueue_job AS j (queue_id, task_name, payload, args, status, priority, run_at, attempts,
                                max_attempts, key, enabled, last_error, created_at, http_path, owner_id,
                                tenant_id, trace_context, serial_group, http_method)
SELECT q.id, u.task_name, u.payload::jsonb, u.args::jsonb, 'pending',
       COALESCE(u.priority, q.priority, %(default_priority)s::int),
       COALESCE(u.run_at, now()) + COALESCE(u.run_in, interval '0'), 0,
       COALESCE(u.max_attempts, q.max_attempts, %(default_max_attempts)s::int),
       u.key, true, '', now(), u.http_path, u.owner_id, u.tenant_id, %(trace)s::jsonb, u.serial_group,
       u.http_method
FROM unnest(%(queue)s::text[], %(task_name)s::text[], %(payload)s::text[], %(args)s::text[],
            %(priority)s::int[], %(run_at)s::timestamptz[], %(max_attempts)s::int[], %(key)s::text[],
            %(http_path)s::text[], %(owner_id)s::int[], %(tenant_id)s::text[], %(serial_group)s::text[],
            %(http_method)s::text[], %(run_in)s::interval[])
     WITH ORDINALITY AS u(queue, task_name, payload, args, priority, run_at, max_attempts, key, http_path,
                          owner_id, tenant_id, serial_group, http_method, run_in, n)
JOIN supaqueue_queue q ON q.name = u.queue
ORDER BY u.n
ON CONFLICT (key) WHERE status IN ('waiting', 'pending') AND key IS NOT NULL DO UPDATE SET
  queue_id = EXCLUDED.queue_id, task_name = EXCLUDED.task_name, payload = EXCLUDED.payload,
  args = EXCLUDED.args, priority = EXCLUDED.priority, max_attempts = EXCLUDED.max_attempts,
  run_at = CASE WHEN %(key_mode)s = 'replace' THEN EXCLUDED.run_at ELSE j.run_at END,
  http_path = EXCLUDED.http_path, owner_id = EXCLUDED.owner_id, tenant_id = EXCLUDED.tenant_id,
  trace_context = EXCLUDED.trace_context, serial_group = EXCLUDED.serial_group,
  http_method = EXCLUDED.http_method
RETURNING id, queue_id, task_name, payload::text, args::text, status, priority, run_at, attempts,
       max_attempts, key, enabled, result::text, last_error, created_at, started_at, finished_at,
       http_path, owner_id, tenant_id, trace_context::text, serial_group, waiting_for, has_dependents,
       on_dependency_failure, http_method


-- name: ensure_queues
-- Create the named queues that do not exist yet, with the settings given for each.
INSERT INTO supaqueue_queue (name, max_attempts, priority, retry_backoff, retry_backoff_max, timeout,
                             paused, concurrency_limit, serial, head_of_line, rate_limit, rate_period,
                             limit_scope, execution_mode, created_at, updated_at)
SELECT u.*, now(), now()
FROM unnest(%(name)s::text[], %(max_attempts)s::int[], %(priority)s::int[],
            %(retry_backoff)s::float8[], %(retry_backoff_max)s::float8[],
            %(timeout)s::float8[], %(paused)s::bool[], %(concurrency_limit)s::int[],
            %(serial)s::bool[], %(head_of_line)s::bool[], %(rate_limit)s::int[],
            %(rate_period)s::float8[], %(limit_scope)s::text[], %(execution_mode)s::text[]) AS u
ON CONFLICT (name) DO NOTHING
